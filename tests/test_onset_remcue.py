"""Sub-epoch states, the ``rem-cue`` and ``onset`` programs, and the sleeper's responses."""

from __future__ import annotations

import math
from dataclasses import replace
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from conftest import DREAMS, ArraySource

from firmware.app import Application
from firmware.program import load_program
from firmware.substates import RemOnsetDetector, SleepOnsetDetector
from hal.adc import AdcModel, FrontEnd
from hal.base import STAGES, Stimulus, UserInputError
from hal.recording import RecordingSource
from sim.runner import RunConfig, run_night
from sim.sleeper import VirtualSleeper

SFREQ = 250.0
#: Sleep onset after 15 min awake and 3 min of N1 (the planned latency: 18 min).
ONSET_HYP = ["W"] * 30 + ["N1"] * 6 + ["N2"] * 10
#: Enough NREM for the stager's REM-latency gate, then 15 min of REM.
REM_HYP = ["W"] * 4 + ["N1"] * 2 + ["N2"] * 10 + ["N3"] * 14 + ["N2"] * 8 + ["R"] * 30 + ["N2"] * 4


def _drive(app, front, n_total, chunk):
    """Feed the app in chunks of ``chunk`` samples, honouring its cuts."""
    stims, stages, logs, idx = [], [], [], 0
    n_total = n_total // 8 * 8
    while idx < n_total:
        data, flags = front.read(idx, min(idx + chunk, n_total))
        res = app.process(idx, data, flags)
        stims += res.stims
        stages += [(s.decision_index, s.decision.stage) for s in res.stages]
        logs += [log for log in res.logs if log["kind"] == "state"]
        idx += res.n_consumed
    return stims, stages, logs


def _write(tmp: Path, name: str, hyp: list[str]) -> str:
    path = tmp / name
    path.write_text("\n".join(hyp) + "\n", encoding="utf-8")
    return str(path)


# -- sub-epoch states -----------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rem_onset_is_detected_close_to_the_true_transition(seed):
    hyp = ["N2"] * 10 + ["N3"] * 4 + ["N2"] * 4 + ["R"] * 10 + ["N2"] * 4
    with VirtualSleeper(seed, hypnogram=hyp, artifacts=False) as s:
        x = s.read(0, s.info.n_samples) * 1e6
    det = RemOnsetDetector(SFREQ, 8)
    events = det.scan(x[[2, 3], : x.shape[1] // 8 * 8], 0)
    onsets = [e.decision_index / SFREQ for e in events if e.kind == "rem_onset"]
    true_onset = hyp.index("R") * 30.0
    assert onsets, "REM onset never detected"
    # No REM before it (NREM: no rapid eye movements, tone not atonic) ...
    assert onsets[0] >= true_onset - 5.0
    # ... and found within ~2.5 min (a few eye movements must come with atonia).
    assert onsets[0] - true_onset < 150.0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sleep_onset_is_detected_close_to_the_true_transition(seed):
    hyp = ["W"] * 10 + ["N1"] * 4 + ["N2"] * 4
    with VirtualSleeper(seed, hypnogram=hyp, artifacts=False) as s:
        x = s.read(0, s.info.n_samples)[0] * 1e6
    det = SleepOnsetDetector(SFREQ, 8)
    events = det.scan(x[: x.size // 8 * 8], 0)
    first = next(e.decision_index / SFREQ for e in events if e.kind == "sleep_onset")
    assert 300.0 - 5.0 <= first <= 300.0 + 60.0  # wake -> N1 at 300 s


@pytest.mark.parametrize("kind", ["rem", "onset"])
def test_substate_detectors_decide_identically_in_chunks(kind):
    hyp = ["N2"] * 2 + ["R"] * 4 if kind == "rem" else ["W"] * 3 + ["N1"] * 3
    with VirtualSleeper(4, hypnogram=hyp, artifacts=False) as s:
        x = s.read(0, s.info.n_samples) * 1e6
    x = x[:, : x.shape[1] // 8 * 8]

    def run(chunk):
        det = RemOnsetDetector(SFREQ, 8) if kind == "rem" else SleepOnsetDetector(SFREQ, 8)
        rows = x[[2, 3]] if kind == "rem" else x[0]
        out = []
        for i in range(0, x.shape[1], chunk):
            out += det.scan(rows[..., i : i + chunk], i)
        return out

    ref = run(x.shape[1])
    assert ref
    assert run(8) == ref
    assert run(2000) == ref


def _recorded_at(hyp: list[str], seed: int, rate: float) -> RecordingSource:
    """A virtual night as a recording made at ``rate`` Hz, loaded back at 250 Hz."""
    import mne

    with VirtualSleeper(seed, hypnogram=hyp, artifacts=False, nightmares=0) as s:
        x = s.read(0, s.info.n_samples)
        names = s.info.ch_names[:5]  # C4, Fpz, E1, chin, ECG (no accelerometer in a PSG)
    info = mne.create_info(names, SFREQ, ["eeg", "eeg", "eog", "emg", "ecg"])
    raw = mne.io.RawArray(x[:5], info, verbose="error").resample(rate, verbose="error")
    return RecordingSource.from_raw(raw, description="low-rate", channel="C4-M1", min_sfreq=rate)


def _rem_states(prog_name: str, src) -> list[tuple[str, float]]:
    """The REM-onset state events the application logs over the whole source."""
    app = Application(load_program(prog_name), src.info, 8, 0.015)
    _, _, logs = _drive(app, FrontEnd(src, AdcModel(), seed=0), src.info.n_samples, 7504)
    return [(log["event"], log["t"]) for log in logs if log["event"].startswith("rem_")]


@pytest.mark.parametrize("seed", [2, 5])
def test_rem_onset_is_found_on_a_chin_emg_recorded_at_50_hz(seed):
    # A 50-Hz recording holds the chin up to 25 Hz only; replayed, the front end adds its
    # noise over the whole 0-125 Hz band. Measured from 15 Hz up, the chin tone was mostly
    # that noise, which atonia does not lower: the REM onset was never found.
    hyp = ["N2"] * 10 + ["N3"] * 4 + ["N2"] * 4 + ["R"] * 10 + ["N2"] * 4
    src = _recorded_at(hyp, seed, 50.0)
    assert src.info.bandwidth_hz == 25.0
    onsets = [t for kind, t in _rem_states("rem-cue", src) if kind == "rem_onset"]
    true_onset = hyp.index("R") * 30.0
    assert onsets, "REM onset never detected on a 50-Hz chin"
    assert onsets[0] >= true_onset - 5.0
    assert onsets[0] - true_onset < 150.0


def test_rem_atonia_band_follows_the_recording_bandwidth(caplog):
    with VirtualSleeper(2, hypnogram=["N2"] * 4 + ["R"] * 6, artifacts=False) as s:
        x = s.read(0, s.info.n_samples)[[2, 3], : s.info.n_samples // 8 * 8] * 1e6
    ref = RemOnsetDetector(SFREQ, 8).scan(x, 0)
    assert ref
    # The full band (no bandwidth, or the device's Nyquist frequency) changes nothing.
    for bw in (None, SFREQ / 2, 200.0):
        det = RemOnsetDetector(SFREQ, 8, emg_bandwidth_hz=bw)
        assert det.f_emg.band == (15.0, None) and det.scan(x, 0) == ref
    det = RemOnsetDetector(SFREQ, 8, emg_bandwidth_hz=25.0)
    assert det.f_emg.band == (15.0, 25.0) and det.use_emg
    # No chin band left above 15 Hz: the eye movements decide alone, with a warning ...
    with caplog.at_level("WARNING", logger="firmware.substates"):
        det = RemOnsetDetector(SFREQ, 8, emg_bandwidth_hz=16.0)
    assert not det.use_emg and "no chin tone" in caplog.text
    eyes = RemOnsetDetector(SFREQ, 8, has_emg=False).scan(x[:1], 0)
    assert det.scan(x, 0) == eyes
    assert det.cycles_per_sample == RemOnsetDetector(SFREQ, 8, has_emg=False).cycles_per_sample
    # ... and without an EOG nothing shows REM.
    with pytest.raises(ValueError, match="needs an EOG or a chin EMG holding 15-20 Hz"):
        RemOnsetDetector(SFREQ, 8, has_eog=False, emg_bandwidth_hz=16.0)


@pytest.mark.skipif(not (DREAMS / "excerpt3.edf").is_file(), reason="DREAMS data not present")
def test_rem_cue_on_dreams_excerpt3_keeps_the_50_hz_chin_and_finds_no_rem():
    # Excerpt 3 (50 Hz) is 30 min of wake, S1-S4 and no REM (expert hypnogram). Its EOG
    # alone meets the eye-movement criterion nearly all the time (REM "on" from 4.6 s,
    # never off): the chin, measured in 15-25 Hz, is what keeps the detector off.
    hyp = np.loadtxt(DREAMS / "Hypnogram_excerpt3.txt", skiprows=1)
    assert 4 not in hyp  # R&K code 4: REM
    src = RecordingSource.from_path(DREAMS / "excerpt3.edf", min_sfreq=50)
    assert src.info.bandwidth_hz == 25.0
    app = Application(load_program("rem-cue"), src.info, 8, 0.015)
    assert app.trigger.detector.use_emg and app.trigger.detector.f_emg.band == (15.0, 25.0)
    assert _rem_states("rem-cue", src) == []


# -- programs in the application ------------------------------------------------------------


def test_new_programs_log_their_sub_epoch_states():
    # (Chunk invariance of both programs: tests/test_firmware.py, every built-in program.)
    for program, hyp, state in (
        ("rem-cue", ["N2"] * 2 + ["R"] * 6, "rem_onset"),
        ("onset", ["W"] * 6 + ["N1"] * 2, "sleep_onset"),
    ):
        prog = load_program(program)
        prog = replace(prog, gate=replace(prog.gate, stages=STAGES, stop_at=()))
        src = VirtualSleeper(5, hypnogram=hyp, artifacts=False)
        app = Application(prog, src.info, 8, 0.015)
        stims, _, logs = _drive(app, FrontEnd(src, AdcModel(), seed=0), src.info.n_samples, 7504)
        assert stims and any(log["event"] == state for log in logs)
        if program == "rem-cue":
            assert all(1 <= s.detail["cue"] <= 3 for s in stims)
            assert all(s.onset_index >= 60 * SFREQ for s in stims)  # REM from 60 s


def test_rem_cue_needs_eog_or_chin():
    eeg = np.zeros((1, 8000))
    src = ArraySource(eeg, SFREQ, [("C4-M1", "eeg")])
    with pytest.raises(UserInputError, match=r"trigger.kind = 'rem-cue'.*EOG"):
        Application(load_program("rem-cue"), src.info, 8, 0.015)


def test_rem_cue_on_a_chin_without_tone_band_and_no_eog_is_a_user_error():
    # A 32-Hz recording resampled up: its chin holds nothing above 16 Hz, no tone band.
    src = ArraySource(np.zeros((2, 8000)), SFREQ, [("C4-M1", "eeg"), ("Chin", "emg")])
    info = replace(src.info, bandwidth_hz=16.0)
    with pytest.raises(UserInputError, match=r"'rem-cue' cannot run here: REM onset needs an EOG"):
        Application(load_program("rem-cue"), info, 8, 0.015)


@cache
def _rem_night(seed: int, folder: str):
    path = _write(Path(folder), "rem.txt", REM_HYP)
    src = f"sleeper://?hypnogram={path}&artifacts=0&nightmares=0"
    return run_night(RunConfig(source=src, seed=seed, program="rem-cue", record=False))


@pytest.mark.parametrize("seed", [2, 3])
def test_rem_cue_cues_only_in_stable_rem_in_trains_and_not_after_arousals(seed, tmp_path_factory):
    res = _rem_night(seed, str(tmp_path_factory.mktemp(f"rem{seed}")))
    cues = [e for e in res.events if e["kind"] == "stim"]
    assert cues and all(e["delivered"] for e in cues)
    t = np.array([e["t"] for e in cues])
    first_r = REM_HYP.index("R") * 30.0
    last_r = (len(REM_HYP) - REM_HYP[::-1].index("R")) * 30.0
    assert np.all((t >= first_r) & (t < last_r)), "a cue outside REM"
    # The stager had called two epochs R before each cue was decided.
    stager = dict(res.hypnogram)
    for e in cues:
        decided = [s for ts, s in stager.items() if ts + 60.0 <= e["decided_t"]]
        assert decided[-2:] == ["R", "R"]
    # Trains: cues 2 s apart within a train, at least 30 s between trains, <= 3 a train.
    gaps = np.diff(t)
    assert np.all((gaps < 2.6) | (gaps >= 30.0))
    assert all(e["cue"] <= 3 for e in cues) and max(e["train"] for e in cues) <= 8
    # Light at 10 %: within the interlock's limits and dim.
    assert all(e["modality"] == "light" and e["level"] == 10.0 for e in cues)
    # No cue while an arousal goes on, nor in the minute after it (the detector decides
    # a few seconds into an arousal: the first 4 s are allowed).
    arousals = [e for e in res.events if e["kind"] == "world" and e.get("event") == "arousal"]
    for a in arousals:
        held = (t > a["t"] + 4.0) & (t < a["t"] + a["duration"] + 55.0)
        assert not held.any(), f"cue during or just after the arousal at {a['t']}"
    assert not [e for e in res.events if e["kind"] == "safety" and e.get("event") == "trip"]


@cache
def _onset_night(seed: int, program: str, folder: str):
    path = _write(Path(folder), "onset.txt", ONSET_HYP)
    src = f"sleeper://?hypnogram={path}&artifacts=0"
    return run_night(RunConfig(source=src, seed=seed, program=program, record=False))


def _first_sleep_s(res) -> float:
    """When the sleeper's world first reached N2 (the true sleep latency)."""
    return min(
        e["t"]
        for e in res.events
        if e["kind"] == "world" and e.get("event") == "stage" and e["stage"] == "N2"
    )


def test_onset_stops_at_the_first_n2_and_shortens_sleep_latency(tmp_path):
    sham = tmp_path / "onset-sham.toml"
    text = (Path(__file__).parents[1] / "firmware" / "programs" / "onset.toml").read_text()
    sham.write_text(text.replace('name = "onset"', 'name = "onset-sham"\nsham = true'))
    shorter = []
    for seed in (1, 2, 3):
        res = _onset_night(seed, "onset", str(tmp_path))
        ctl = _onset_night(seed, str(sham), str(tmp_path))
        pulses = [e for e in res.events if e["kind"] == "stim"]
        assert pulses and all(e["delivered"] for e in pulses)
        assert all(e["reason"] == "alpha-phase" and e["level"] == 40.0 for e in pulses)
        # Never after the stager's first N2/N3/R decision (known one epoch late) ...
        stages = [e for e in res.events if e["kind"] == "stage"]
        stop = min(e["t"] for e in stages if e["stage"] in ("N2", "N3", "R"))
        assert all(e["decided_t"] <= stop for e in pulses)
        # ... and only while the last decided epoch was W or N1.
        for e in pulses:
            known = [s["stage"] for s in stages if s["t"] <= e["decided_t"]]
            assert known and known[-1] in ("W", "N1")
        assert not [e for e in res.events if e["kind"] == "safety" and e.get("event") == "trip"]
        shorter.append(_first_sleep_s(ctl) - _first_sleep_s(res))
        assert _first_sleep_s(ctl) == ONSET_HYP.index("N2") * 30.0  # sham: as planned
    assert all(s >= 0 for s in shorter) and np.mean(shorter) >= 60.0, shorter


# -- the sleeper's responses ----------------------------------------------------------------


def _locked_onsets(s: VirtualSleeper, t0: float, t1: float, step_s: float, locked: bool, rng):
    """Pulse onsets every ~step_s: at the sleeper's alpha peak, or at random phases."""
    out = []
    t = t0
    while t < t1:
        i = round(t * SFREQ)
        if locked:
            # The next sample within one alpha cycle whose true phase is closest to 0.
            cand = [(abs(s.alpha_phase(j)[0]), j) for j in range(i, i + 26, 2)]
            i = min(cand)[1]
        else:
            i += int(rng.integers(0, 26))
        out.append(i)
        t += step_s
    return out


def test_sleep_onset_comes_earlier_with_phase_locked_pulses_only():
    rng = np.random.default_rng(0)
    results = {}
    for mode in ("locked", "random"):
        s = VirtualSleeper(3, hypnogram=ONSET_HYP, artifacts=False)
        onsets = _locked_onsets(s, 60.0, 840.0, 5.0, mode == "locked", rng)
        before = s.read(0, onsets[0]).copy()
        for i in onsets:
            s.stimulate(Stimulus(i, "audio", 40.0, 0.05, "alpha-phase"))
        # Samples before the first pulse never change.
        np.testing.assert_array_equal(s.read(0, onsets[0]), before)
        results[mode] = s.hypnogram.index("N2") * 30.0
    planned = ONSET_HYP.index("N2") * 30.0
    assert results["locked"] <= planned - 300.0  # 156 pulses at the peak: minutes earlier
    assert abs(results["random"] - planned) <= 60.0  # random phases: about as planned


def test_onset_advance_changes_nothing_before_the_pulse_and_is_reproducible():
    def night():
        s = VirtualSleeper(2, hypnogram=ONSET_HYP, artifacts=False)
        onsets = _locked_onsets(s, 600.0, 700.0, 5.0, True, None)
        for i in onsets:
            s.stimulate(Stimulus(i, "audio", 40.0, 0.05, "alpha-phase"))
        return s, onsets

    a, onsets = night()
    b, _ = night()
    ref = VirtualSleeper(2, hypnogram=ONSET_HYP, artifacts=False)
    n = a.info.n_samples
    np.testing.assert_array_equal(a.read(0, n), b.read(0, n))
    np.testing.assert_array_equal(a.read(0, onsets[0]), ref.read(0, onsets[0]))
    assert a.hypnogram != ref.hypnogram
    events = a.world_events(0, n)
    assert any(e["event"] == "onset_advance" for e in events)
    stage_events = [e for e in events if e["event"] == "stage"]
    assert [e["stage"] for e in stage_events] == ["W", "N1", "N2"]


def test_rem_cues_enter_dreams_and_bright_ones_arouse_more():
    hyp = ["R"] * 70
    counts = {}
    for pct in (5.0, 30.0):
        s = VirtualSleeper(6, hypnogram=hyp, artifacts=False, nightmares=0)
        for k in range(170):  # one cue every 12 s: no "recent stimuli" term
            s.stimulate(Stimulus(round((5.0 + 12.0 * k) * SFREQ), "light", pct, 0.2, "rem-cue"))
        events = s.world_events(0, s.info.n_samples)
        counts[pct] = {
            "arousal": sum(e["event"] == "arousal" and e["cause"] == "stimulus" for e in events),
            "incorporated": sum(e["event"] == "cue_incorporated" for e in events),
            "lucid": sum(e["event"] == "lucid_signal" for e in events),
        }
    assert counts[30.0]["arousal"] > counts[5.0]["arousal"]
    assert counts[30.0]["incorporated"] > counts[5.0]["incorporated"] > 0
    assert counts[30.0]["lucid"] <= 1 and counts[5.0]["lucid"] <= 1  # once per REM period


def test_a_lucid_dreamer_signals_with_eye_movements():
    hyp = ["R"] * 20
    s = VirtualSleeper(1, hypnogram=hyp, artifacts=False, nightmares=0)
    k = 0
    while not any(e["event"] == "lucid_signal" for e in s.world_events(0, s.info.n_samples)):
        s.stimulate(Stimulus(round((5.0 + 12.0 * k) * SFREQ), "audio", 45.0, 0.2, "rem-cue"))
        k += 1
        assert k < 40, "no lucid dream after 40 cues"
    sig = next(e for e in s.world_events(0, s.info.n_samples) if e["event"] == "lucid_signal")
    i = round(sig["t"] * SFREQ)
    ref = VirtualSleeper(1, hypnogram=hyp, artifacts=False, nightmares=0)
    diff = (s.read(i, i + round(2.4 * SFREQ)) - ref.read(i, i + round(2.4 * SFREQ)))[2] * 1e6
    assert np.ptp(diff) > 300.0 and math.isclose(
        float(np.mean(np.abs(diff) > 100)), 0.8, abs_tol=0.2
    )
