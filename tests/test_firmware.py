"""The application firmware: causal filters, trigger, quality, stager, chunk equivalence."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from conftest import ArraySource, distress_source, slow_wave_eeg
from hypothesis import given
from hypothesis import strategies as st
from scipy import signal

from firmware.app import Application
from firmware.dsp import CausalFilter
from firmware.program import load_program
from firmware.quality import CAUSES, FLAT_PTP_UV, QualityMonitor
from firmware.trigger import UpPhaseTrigger
from hal.adc import FLAG_CLIPPED, FLAG_LEAD_OFF, AdcModel, FrontEnd
from hal.base import STAGES, UserInputError

SFREQ = 250.0


@pytest.mark.parametrize("block", [1, 8, 37, 7500])
def test_filter_block_by_block_equals_whole_signal(block):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 7500 * 2)) * 50
    whole = signal.sosfilt(CausalFilter((0.5, 2.0), SFREQ, n_channels=2).sos, x, axis=-1)
    f = CausalFilter((0.5, 2.0), SFREQ, n_channels=2)
    pieces = [f.process(x[:, i : i + block]) for i in range(0, x.shape[1], block)]
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), whole, rtol=0, atol=1e-9)


def test_filter_peek_does_not_advance_and_commit_does():
    f = CausalFilter((0.5, 2.0), SFREQ)
    x = np.ones((1, 100))
    y1, _ = f.peek(x)
    y2, _ = f.peek(x)
    np.testing.assert_array_equal(y1, y2)
    f.commit(x)
    y3, _ = f.peek(x)
    assert not np.allclose(y1, y3)


def test_filter_rejects_impossible_band():
    with pytest.raises(ValueError, match="0 < low < high"):
        CausalFilter((2.0, 0.5), SFREQ)
    with pytest.raises(ValueError, match="at least one band edge"):
        CausalFilter((None, None), SFREQ)


def test_trigger_predicts_the_positive_peak_of_a_clean_slow_wave():
    # A pure 1 Hz cosine: troughs at t = 0.5 + k s, positive peaks at t = k s.
    t = np.arange(int(20 * SFREQ)) / SFREQ
    y = 80 * np.cos(2 * np.pi * 1.0 * t)
    trig = UpPhaseTrigger(SFREQ, threshold_uv=-40)
    cands, _ = trig.peek(y, 0)
    assert len(cands) >= 18
    for c in cands:
        assert abs(c.trough_index / SFREQ % 1.0 - 0.5) < 0.01
        # Peak predicted one half period after the trough, within a sample.
        assert abs(c.peak_index - c.trough_index - SFREQ / 2) <= 1
        assert c.decision_index == c.trough_index + 1
        assert c.trough_uv == pytest.approx(-80, abs=0.1)


def test_trigger_ignores_shallow_troughs():
    t = np.arange(int(10 * SFREQ)) / SFREQ
    cands, _ = UpPhaseTrigger(SFREQ, threshold_uv=-40).peek(30 * np.cos(2 * np.pi * t), 0)
    assert cands == []


@pytest.mark.parametrize("block", [8, 100, 1000])
def test_trigger_in_pieces_equals_whole(block):
    y = slow_wave_eeg(60, SFREQ, seed=1) * 1e6
    y = signal.sosfilt(CausalFilter((0.5, 2.0), SFREQ).sos, y)
    whole, _ = UpPhaseTrigger(SFREQ, -40).peek(y, 0)
    trig = UpPhaseTrigger(SFREQ, -40)
    pieces = []
    for i in range(0, y.size, block):
        piece = y[i : i + block]
        c, scan = trig.peek(piece, i)
        trig.commit(scan.state(piece.size))
        pieces.extend(c)
    assert pieces == whole and len(whole) > 20


@given(
    levels=st.lists(st.sampled_from([0.5, 3.0, 6.0, 40.0]), min_size=1, max_size=12),
    lengths=st.lists(st.integers(1, 40), min_size=12, max_size=12),
    split=st.integers(1, 300),
)
def test_quality_flat_test_equals_the_sliding_window_by_brute_force(levels, lengths, split):
    """The compiled flat test gives the verdicts of the sliding window, by brute force."""
    rng = np.random.default_rng(len(levels))
    x = np.concatenate(
        [lvl * rng.uniform(-1, 1, 8 * k) for lvl, k in zip(levels, lengths, strict=False)]
    )
    flags = np.zeros(x.size, dtype=np.uint8)
    q = QualityMonitor(SFREQ, 8)
    cut = min(split, x.size // 8) * 8
    c1, scan = q.peek(x[:cut], flags[:cut])
    q.commit(scan.state(cut // 8))
    c2, _ = q.peek(x[cut:], flags[cut:]) if cut < x.size else (np.zeros(0, np.int8), None)
    got = np.concatenate([c1, c2])
    xb = x.reshape(-1, 8)
    w = q.window
    expected = [
        CAUSES.index("flat") if k >= w - 1 and np.ptp(xb[k - w + 1 : k + 1]) < FLAT_PTP_UV else 0
        for k in range(xb.shape[0])
    ]
    np.testing.assert_array_equal(got, expected)


def test_quality_flags_each_cause():
    q = QualityMonitor(SFREQ, 8)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(8 * 200) * 20
    flags = np.zeros(x.size, dtype=np.uint8)
    x[8 * 50 : 8 * 51] = 900  # one block of huge amplitude
    flags[8 * 80 + 3] = FLAG_CLIPPED
    flags[8 * 100 + 1] = FLAG_LEAD_OFF
    x[8 * 150 :] = 7.0  # flat from block 150 on
    cause, _ = q.peek(x, flags)
    names = [CAUSES[c] for c in cause]
    assert names[50] == "amplitude"
    assert names[80] == "clipped"
    assert names[100] == "lead_off"
    assert names[120] == "ok"
    # Flat is declared once the last 31 blocks (about one second) are all flat.
    assert names[150 + 29] == "ok" and names[150 + 30] == "flat" and names[-1] == "flat"


def test_quality_judges_amplitude_from_the_electrodes_dc_level():
    # DC-coupled front ends (ADS1299, BioSemi) carry the EEG on an offset of many mV.
    q = QualityMonitor(SFREQ, 8)
    rng = np.random.default_rng(1)
    n_blocks = 3000  # 96 s
    x = 40 * np.sin(2 * np.pi * 0.8 * np.arange(8 * n_blocks) / SFREQ)
    x += 10 * rng.standard_normal(x.size) + 20_000.0  # 20 mV half-cell offset
    x += np.linspace(0, 5_000, x.size)  # drifting 5 mV in a minute and a half
    flags = np.zeros(x.size, dtype=np.uint8)
    x[8 * 2500 : 8 * 2501] += 900  # one block of huge amplitude on top of the offset
    cause, _ = q.peek(x, flags)
    names = [CAUSES[c] for c in cause]
    assert names[2500] == "amplitude"
    assert names.count("amplitude") == 1 and names.count("ok") == len(names) - 1


def test_quality_dc_level_follows_a_pop_and_restarts_after_lead_off():
    q = QualityMonitor(SFREQ, 8)
    rng = np.random.default_rng(2)
    x = 20 * rng.standard_normal(8 * 3000)
    flags = np.zeros(x.size, dtype=np.uint8)
    x[8 * 500 :] += 5_000.0  # an electrode pop: the level steps by 5 mV and stays
    flags[8 * 2000 : 8 * 2001] = FLAG_LEAD_OFF
    x[8 * 2001 :] -= 12_000.0  # reconnected at another level
    cause, _ = q.peek(x, flags)
    names = [CAUSES[c] for c in cause]
    assert names[499] == "ok" and names[500] == "amplitude"
    # The level catches up within tau * ln(5000 / 500) ~ 4.6 s (144 blocks) of the step.
    back = names.index("ok", 500)
    assert 100 < back - 500 < 160, back
    assert names[2000] == "lead_off" and set(names[2001:]) == {"ok"}


@given(
    steps=st.lists(st.floats(-20_000, 20_000), min_size=1, max_size=6),
    splits=st.lists(st.integers(1, 400), min_size=1, max_size=4),
    lead_off=st.integers(0, 1199),
)
def test_quality_verdicts_do_not_depend_on_where_the_blocks_are_cut(steps, splits, lead_off):
    """Any cutting into peeks and commits gives the verdicts of one peek (carried state)."""
    rng = np.random.default_rng(len(steps))
    n = 8 * 1200
    x = 30 * rng.standard_normal(n) + np.repeat(steps, -(-n // len(steps)))[:n]
    flags = np.zeros(n, dtype=np.uint8)
    flags[8 * lead_off] = FLAG_LEAD_OFF
    whole, _ = QualityMonitor(SFREQ, 8).peek(x, flags)
    q = QualityMonitor(SFREQ, 8)
    got, pos = [], 0
    for k in [*splits, 10**6]:
        stop = min(n, pos + 8 * k)
        c, scan = q.peek(x[pos:stop], flags[pos:stop])
        # Commit only part of what was peeked, as the app does after a stimulus.
        keep = max(1, len(c) // 2) if stop < n else len(c)
        q.commit(scan.state(keep))
        got.extend(c[:keep])
        pos += 8 * keep
        if pos >= n:
            break
    rest, _ = q.peek(x[pos:], flags[pos:]) if pos < n else (np.zeros(0, np.int8), None)
    np.testing.assert_array_equal(np.concatenate([got, rest]).astype(np.int8), whole)


def _app_and_front(seconds=240, seed=0):
    eeg = slow_wave_eeg(seconds, SFREQ, seed=seed)
    src = ArraySource(np.vstack([eeg, 0.2 * eeg]), SFREQ, [("C4-M1", "eeg"), ("E1", "eog")])
    front = FrontEnd(src, AdcModel(), seed=seed)
    app = Application(load_program("clas"), src.info, 8, output_latency_s=0.015)
    return app, front, src.info.n_samples


def _drive(app, front, n_total, chunk):
    """Feed the app in chunks of ``chunk`` samples, honouring its cuts."""
    stims, stages, idx = [], [], 0
    n_total = n_total // 8 * 8
    while idx < n_total:
        stop = min(idx + chunk, n_total)
        data, flags = front.read(idx, stop)
        res = app.process(idx, data, flags)
        stims += res.stims
        stages += [(s.decision_index, s.decision.stage) for s in res.stages]
        idx += res.n_consumed
    return stims, stages


def test_a_dc_offset_on_the_electrodes_changes_no_decision():
    """A DC-coupled front end's half-cell offset (20 mV) is not bad signal."""
    runs = []
    for offset_uv in (0.0, 20_000.0):
        eeg = slow_wave_eeg(240, SFREQ, seed=3) + offset_uv * 1e-6
        src = ArraySource(np.vstack([eeg, 0.2 * eeg]), SFREQ, [("C4-M1", "eeg"), ("E1", "eog")])
        app = Application(load_program("clas"), src.info, 8, output_latency_s=0.015)
        stims, stages = _drive(app, FrontEnd(src, AdcModel(), seed=3), src.info.n_samples, 7504)
        runs.append(([s.onset_index for s in stims], stages, app.bad_until))
    assert runs[0][0], "the clean night must deliver stimuli for the comparison to mean anything"
    assert runs[1] == runs[0]


def test_application_decisions_do_not_depend_on_chunking():
    """The fast path (many blocks per call) decides exactly as the block-by-block device."""
    app, front, n = _app_and_front()
    ref = _drive(app, front, n, 8)
    for chunk in (64, 2000, 7504):
        app, front, n = _app_and_front()
        assert _drive(app, front, n, chunk) == ref
    stims, stages = ref
    # Eight epochs; the stager holds each until the next has arrived (one epoch of
    # look-ahead), so seven are decided in the stream and the last one at the end.
    assert len(stages) == 7 and all(s == "N3" for _, s in stages[1:])
    assert [k for k, _ in stages][:2] == [15000, 22504]
    # Stimulation starts only once an epoch was staged N2/N3, then respects the refractory.
    assert stims and stims[0].decision_index >= stages[0][0]
    onsets = np.array([s.onset_index for s in stims])
    assert np.all(np.diff(onsets) >= 2.5 * SFREQ)


def test_application_withholds_stimulation_on_bad_signal():
    eeg = slow_wave_eeg(240, SFREQ, seed=2)
    eeg[int(130 * SFREQ) : int(150 * SFREQ)] = np.nan  # 20 s of lead-off
    src = ArraySource(eeg[np.newaxis], SFREQ, [("C4-M1", "eeg")])
    front = FrontEnd(src, AdcModel(), seed=0)
    app = Application(load_program("clas"), src.info, 8, 0.015)
    stims, _ = _drive(app, front, src.info.n_samples, 7504)
    onsets = np.array([s.decision_index for s in stims]) / SFREQ
    assert np.sum(onsets < 130) > 5 and np.sum(onsets > 156) > 5
    assert not np.any((onsets >= 130) & (onsets < 155))  # the stretch and a 5-s hold-off


def test_application_needs_an_eeg_channel():
    from hal.base import UserInputError

    src = ArraySource(np.zeros((1, 8000)), SFREQ, [("Chin", "emg")])
    with pytest.raises(UserInputError, match="no EEG channel"):
        Application(load_program("clas"), src.info, 8, 0.015)


@pytest.mark.parametrize(
    "program", ["clas", "clas-ngo", "sham", "tmr", "nightmare-guard", "rem-cue", "onset"]
)
def test_every_builtin_program_decides_identically_in_chunks(program):
    def run(chunk):
        prog = load_program(program)
        if program in ("rem-cue", "onset"):
            # A virtual sleeper's REM (eyes, chin) or falling asleep (alpha); the gate is
            # opened and stop_at removed (the stager needs a longer night to call REM).
            from sim.sleeper import VirtualSleeper

            hyp = ["N2"] * 2 + ["R"] * 6 if program == "rem-cue" else ["W"] * 6 + ["N1"] * 2
            src = VirtualSleeper(5, hypnogram=hyp, artifacts=False)
            prog = replace(prog, gate=replace(prog.gate, stages=STAGES, stop_at=()))
        elif program == "nightmare-guard":
            # Heart, chin and movement with a distress episode; the stage gate is opened to
            # every stage (the stager would not call a synthetic EEG REM; the gate itself
            # is shared with every program).
            src = distress_source(240.0, SFREQ, seed=5)
            prog = replace(prog, gate=replace(prog.gate, stages=STAGES))
        else:
            eeg = slow_wave_eeg(150, SFREQ, seed=5, amp_uv=110)
            src = ArraySource(eeg[np.newaxis], SFREQ, [("C4-M1", "eeg")])
        app = Application(prog, src.info, 8, 0.015)
        return _drive(app, FrontEnd(src, AdcModel(), seed=0), src.info.n_samples, chunk)

    ref = run(8)
    assert ref[0], "the program never decided"
    assert run(7504) == ref
    assert run(2000) == ref
    if program == "nightmare-guard":
        levels = [s.detail["level_db"] for s in ref[0]]
        # Gentle first, stronger every 5 s, never above the top; pulses stop with distress.
        assert levels[0] == 20.0 and levels == sorted(levels) and max(levels) <= 60.0
        onsets = np.array([s.onset_index for s in ref[0]]) / SFREQ
        assert 100.0 < onsets[0] < 125.0 and onsets[-1] < 185.0
        assert np.all(np.diff(onsets) >= 5.0)
        # Held while the head moves (150-152 s) and until it has been still for 3 s.
        assert not np.any((onsets > 150.0) & (onsets < 155.0))


def test_nightmare_guard_needs_an_ecg_channel():
    eeg = slow_wave_eeg(10, SFREQ, seed=1)
    src = ArraySource(eeg[np.newaxis], SFREQ, [("C4-M1", "eeg")])
    with pytest.raises(UserInputError, match="needs an ECG channel"):
        Application(load_program("nightmare-guard"), src.info, 8, 0.015)


def test_ngo_pair_plays_a_second_click_one_cycle_later():
    eeg = slow_wave_eeg(150, SFREQ, seed=5, amp_uv=110)
    src = ArraySource(eeg[np.newaxis], SFREQ, [("C4-M1", "eeg")])
    app = Application(load_program("clas-ngo"), src.info, 8, 0.015)
    stims, _ = _drive(app, FrontEnd(src, AdcModel(), seed=0), src.info.n_samples, 7504)
    assert len(stims) >= 4 and len(stims) % 2 == 0
    for first, second in zip(stims[::2], stims[1::2], strict=True):
        assert (first.detail["click"], second.detail["click"]) == (1, 2)
        gap = (second.onset_index - first.onset_index) / SFREQ
        assert 0.5 <= gap <= 2.0  # one slow-oscillation cycle
        # Ngo: 500 ms from the crossing to the first click.
        assert first.onset_index - first.decision_index == pytest.approx(0.5 * SFREQ, abs=2)


def test_read_horizon_does_not_change_decisions():
    app, front, n = _app_and_front()
    ref = _drive(app, front, n, 7504)
    app, front, n = _app_and_front()
    stims, stages, idx = [], [], 0
    n = n // 8 * 8
    while idx < n:
        stop = app.read_horizon(idx, min(idx + 7504, n))
        assert stop % 8 == 0 and idx < stop <= min(idx + 7504, n)
        data, flags = front.read(idx, stop)
        res = app.process(idx, data, flags)
        stims += res.stims
        stages += [(s.decision_index, s.decision.stage) for s in res.stages]
        idx += res.n_consumed
    assert (stims, stages) == ref


def test_an_arousal_pauses_stimulation():
    eeg = slow_wave_eeg(240, SFREQ, seed=6, amp_uv=110)
    rng = np.random.default_rng(1)
    emg = 3e-6 * rng.standard_normal(eeg.size)
    burst = slice(int(150 * SFREQ), int(156 * SFREQ))
    emg[burst] = 60e-6 * rng.standard_normal(int(6 * SFREQ))  # a 6-s chin EMG burst
    src = ArraySource(np.vstack([eeg, emg]), SFREQ, [("C4-M1", "eeg"), ("Chin", "emg")])
    app = Application(load_program("clas"), src.info, 8, 0.015)
    stims, _ = _drive(app, FrontEnd(src, AdcModel(), seed=0), src.info.n_samples, 7504)
    decided = np.array([s.decision_index for s in stims]) / SFREQ
    assert np.sum(decided < 150) > 5 and np.sum(decided > 170) > 5
    # Paused from the burst's detection (about 1 s in) for pause_after_arousal_s = 10 s.
    assert not np.any((decided >= 151) & (decided < 160))


def _emg_bursts(seconds, bursts):
    """EEG with slow waves and a chin EMG with 6-s bursts starting at ``bursts`` (s)."""
    eeg = slow_wave_eeg(seconds, SFREQ, seed=6, amp_uv=110)
    rng = np.random.default_rng(1)
    emg = 3e-6 * rng.standard_normal(eeg.size)
    for b in bursts:
        emg[int(b * SFREQ) : int((b + 6) * SFREQ)] = 60e-6 * rng.standard_normal(int(6 * SFREQ))
    return ArraySource(np.vstack([eeg, emg]), SFREQ, [("C4-M1", "eeg"), ("Chin", "emg")])


def test_a_repeated_arousal_pauses_stimulation_much_longer():
    src = _emg_bursts(600, [150, 200])
    app = Application(load_program("clas"), src.info, 8, 0.015)
    stims, _ = _drive(app, FrontEnd(src, AdcModel(), seed=0), src.info.n_samples, 7504)
    decided = np.array([s.decision_index for s in stims]) / SFREQ
    # The first arousal pauses until 10 s after it ended; stimulation resumes.
    assert np.sum((decided > 170) & (decided < 200)) > 3
    # The second began within repeat_window_s: 300 s after it ended (about 207 s).
    assert not np.any((decided >= 200) & (decided < 505))
    assert np.sum(decided > 510) > 3


def test_the_last_look_before_a_timer_fires_sees_an_arousal_and_bad_signal():
    src = _emg_bursts(240, [150])
    app = Application(load_program("clas"), src.info, 8, 0.015)
    front = FrontEnd(src, AdcModel(), seed=0)
    _drive(app, front, int(140 * SFREQ), 7504)
    assert app.withheld_at(app.next_index) is None
    _drive_from(app, front, 152 * 256)  # into the burst: its early event is out
    assert app.withheld_at(app.next_index) == "withheld: arousal"

    eeg = slow_wave_eeg(240, SFREQ, seed=2)
    eeg[int(130 * SFREQ) : int(150 * SFREQ)] = np.nan
    src = ArraySource(eeg[np.newaxis], SFREQ, [("C4-M1", "eeg")])
    app = Application(load_program("clas"), src.info, 8, 0.015)
    front = FrontEnd(src, AdcModel(), seed=0)
    _drive(app, front, 131 * 256, 7504)
    assert app.withheld_at(app.next_index) == "withheld: bad signal"


def _drive_from(app, front, stop):
    stop = stop // 8 * 8
    idx = app.next_index
    while idx < stop:
        data, flags = front.read(idx, stop)
        idx += app.process(idx, data, flags).n_consumed


def test_lead_off_on_any_eeg_electrode_withholds_stimulation():
    eeg = slow_wave_eeg(240, SFREQ, seed=2)
    other = slow_wave_eeg(240, SFREQ, seed=3)
    other[int(130 * SFREQ) : int(150 * SFREQ)] = np.nan  # only the second electrode is off
    src = ArraySource(np.vstack([eeg, other]), SFREQ, [("C4-M1", "eeg"), ("Fpz-M2", "eeg")])
    app = Application(load_program("clas"), src.info, 8, 0.015)
    stims, _ = _drive(app, FrontEnd(src, AdcModel(), seed=0), src.info.n_samples, 7504)
    onsets = np.array([s.decision_index for s in stims]) / SFREQ
    assert np.sum(onsets < 130) > 5 and np.sum(onsets > 156) > 5
    assert not np.any((onsets >= 130) & (onsets < 155))


def spindly_eeg(seconds, seed):
    """N2-like test EEG: small slow waves and a 13-Hz, 1-s spindle every 6 s (volts)."""
    x = slow_wave_eeg(seconds, SFREQ, seed=seed, amp_uv=25)
    t = np.arange(int(1.0 * SFREQ)) / SFREQ
    spindle = 30e-6 * np.sin(2 * np.pi * 13 * t) * np.hanning(t.size)
    for onset in np.arange(3.0, seconds - 2, 6.0):
        i = int(onset * SFREQ)
        x[i : i + t.size] += spindle
    return x


def test_spindle_cue_cues_each_spindle_soon_after_it_starts():
    def run(chunk):
        src = ArraySource(spindly_eeg(240, 7)[np.newaxis], SFREQ, [("C4-M1", "eeg")])
        app = Application(load_program("spindle-cue"), src.info, 8, 0.015)
        stims, stages = _drive(app, FrontEnd(src, AdcModel(), seed=0), src.info.n_samples, chunk)
        return stims, stages

    stims, stages = run(7504)
    assert stims, f"no cue; stages were {[s for _, s in stages]}"
    assert run(8) == (stims, stages)
    for s in stims:
        into = (s.onset_index / SFREQ - 3.0) % 6.0  # time since the spindle began
        assert 0.2 < into < 1.0, into
        assert s.detail["sound"] == "click"


@pytest.mark.parametrize(
    ("emg_band", "ecg_band", "source_band", "emg_used"),
    [
        (None, None, None, True),  # full band everywhere
        (None, 25.0, 25.0, True),  # a slow ECG in an EDF says nothing of the chin
        (25.0, None, 25.0, False),  # the chin itself was recorded at 50 Hz
        (None, None, 25.0, False),  # a source that only knows the band of all channels
    ],
)
def test_chin_emg_for_arousals_is_judged_by_its_own_band(emg_band, ecg_band, source_band, emg_used):
    from dataclasses import replace

    from hal.base import ChannelSpec

    src = ArraySource(
        np.zeros((3, 8000)), SFREQ, [("C4-M1", "eeg"), ("Chin", "emg"), ("ECG", "ecg")]
    )
    channels = (
        ChannelSpec("C4-M1", "eeg"),
        ChannelSpec("Chin", "emg", emg_band),
        ChannelSpec("ECG", "ecg", ecg_band),
    )
    info = replace(src.info, channels=channels, bandwidth_hz=source_band)
    app = Application(load_program("clas"), info, 8, output_latency_s=0.015)
    assert (1 in app._arousal_rows) == emg_used
