"""Fast checks of the virtual sleeper (sim.sleeper) and its sleeper:// backend."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import butter, find_peaks, hilbert, sosfiltfilt, welch

from hal import open_source
from hal.backends.protocol_sleeper import parse_spec
from hal.base import ROLES, STAGES, SignalSource, Stimulus, UserInputError
from sim.hypnogram import generate_hypnogram, read_hypnogram, stage_fractions
from sim.sleeper import VirtualSleeper

SF = 250.0
EP = 7500  # samples per 30-s epoch at 250 Hz
BLOCK = {"W": 6, "N1": 6, "N2": 6, "N3": 6, "R": 6}


@pytest.fixture(scope="module")
def staged() -> tuple[VirtualSleeper, np.ndarray, list[str]]:
    """Six epochs of each stage, no artifacts, read in one go."""
    hyp = [s for s, n in BLOCK.items() for _ in range(n)]
    sl = VirtualSleeper(seed=11, hypnogram=hyp, artifacts=False)
    return sl, sl.read(0, sl.info.n_samples), hyp


def _stage_rows(x: np.ndarray, hyp: list[str], stage: str, skip: int = 1) -> np.ndarray:
    """Samples of ``stage`` epochs, dropping the first ``skip`` (cross-fade from before)."""
    idx = [i for i, s in enumerate(hyp) if s == stage][skip:]
    return np.concatenate([x[..., i * EP : (i + 1) * EP] for i in idx], axis=-1)


def _relpow(x: np.ndarray, lo: float, hi: float) -> float:
    f, p = welch(x, SF, nperseg=int(5 * SF))
    tot = p[(f >= 0.4) & (f <= 30)].sum()
    return float(p[(f >= lo) & (f < hi)].sum() / tot)


# ----------------------------------------------------------------------- source contract


def test_is_signal_source_with_roles() -> None:
    sl = VirtualSleeper(seed=1, hours=0.1)
    assert isinstance(sl, SignalSource)
    info = sl.info
    assert info.sfreq == SF and info.n_samples == 12 * EP
    assert info.ch_names == ["C4-M1", "Fpz-M2", "E1-M2", "Chin", "ECG", "Accel"]
    assert info.picks("eeg") == [0, 1]
    assert info.picks("eog") == [2] and info.picks("emg") == [3]
    assert info.picks("ecg") == [4] and info.picks("accel") == [5]
    assert all(c.role in ROLES for c in info.channels)
    x = sl.read(0, 100)
    assert x.shape == (6, 100) and x.dtype == np.float64


def test_deterministic_from_seed() -> None:
    a = VirtualSleeper(seed=7, hours=0.2).read(0, 3 * EP)
    b = VirtualSleeper(seed=7, hours=0.2).read(0, 3 * EP)
    np.testing.assert_array_equal(a, b)


def test_different_seeds_differ() -> None:
    a = VirtualSleeper(seed=7, hours=0.2, artifacts=False)
    b = VirtualSleeper(seed=8, hours=0.2, artifacts=False)
    assert not np.allclose(a.read(0, EP), b.read(0, EP))
    assert a.person != b.person


def test_reread_and_block_sizes_bit_identical() -> None:
    sl = VirtualSleeper(seed=3, hours=0.3)
    whole = VirtualSleeper(seed=3, hours=0.3).read(0, 4 * EP)
    rng = np.random.default_rng(0)
    pos, parts = 0, []
    while pos < 4 * EP:
        n = int(rng.choice([8, 8, 250, 1000, 7500, 7501]))
        stop = min(pos + n, 4 * EP)
        chunk = sl.read(pos, stop)
        # The simulator re-reads the tail of a chunk: same bits again.
        tail = max(pos, stop - 5)
        np.testing.assert_array_equal(sl.read(tail, stop), chunk[:, tail - pos :])
        parts.append(chunk)
        pos = stop
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), whole)


def test_read_clipped_at_end_and_close() -> None:
    sl = VirtualSleeper(seed=1, hours=0.05)  # 6 epochs
    n = sl.info.n_samples
    assert sl.read(n - 10, n + 100).shape == (6, 10)
    assert sl.read(n, n + 5).shape == (6, 0)
    with sl:
        pass
    with pytest.raises(ValueError):
        sl.read(0, 10)
    sl.close()  # idempotent


def test_no_step_at_tile_edges(staged: tuple) -> None:
    sl, x, _ = staged
    d = np.abs(np.diff(x, axis=1))
    edges = np.arange(EP, x.shape[1], EP) - 1
    for ch in range(6):
        # A click would stand far above the largest ordinary steps (eye movements, spikes).
        typical = np.percentile(d[ch], 99.9)
        assert d[ch, edges].max() < 2.0 * typical, sl.info.ch_names[ch]
        # Mean step across an edge is like any other step (no systematic click).
        assert d[ch, edges].mean() < 2.0 * d[ch].mean()


def test_no_global_random_state_used() -> None:
    # Reading the legacy global state is the point here: nothing may have advanced it.
    state = np.random.get_state()[1].copy()  # noqa: NPY002
    sl = VirtualSleeper(seed=2, hours=0.1)
    sl.read(0, sl.info.n_samples)
    sl.stimulate(Stimulus(EP, "audio", 70.0, 0.05, "test"))
    sl.read(EP, 2 * EP)
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # noqa: NPY002


# ----------------------------------------------------------------------- per-stage signals


def test_alpha_in_wake_delta_in_n3(staged: tuple) -> None:
    _, x, hyp = staged
    c4 = {s: _stage_rows(x[0], hyp, s) for s in STAGES}
    assert _relpow(c4["W"], 8, 12) > 2.5 * _relpow(c4["N3"], 8, 12)
    assert _relpow(c4["N3"], 0.4, 4) > 1.5 * _relpow(c4["R"], 0.4, 4)
    assert _relpow(c4["N1"], 4, 8) > 1.5 * _relpow(c4["N2"], 4, 8)  # theta of drowsiness
    f, p = welch(c4["N3"], SF, nperseg=int(5 * SF))
    f2, p2 = welch(c4["R"], SF, nperseg=int(5 * SF))
    assert p[(f >= 0.4) & (f < 4)].sum() > 10 * p2[(f2 >= 0.4) & (f2 < 4)].sum()


def test_slow_oscillations_large_in_n3(staged: tuple) -> None:
    _, x, hyp = staged
    c4 = _stage_rows(x[0], hyp, "N3") * 1e6
    # Peak-to-peak per 2-s window: most windows carry a >75 uV slow wave, many 100-250 uV.
    w = c4[: len(c4) // 500 * 500].reshape(-1, 500)
    ptp = np.ptp(w, axis=1)
    assert np.median(ptp) > 75.0
    assert np.percentile(ptp, 90) > 120.0
    assert np.percentile(ptp, 90) < 400.0


def test_spindle_bursts_in_n2(staged: tuple) -> None:
    _, x, hyp = staged
    sos = butter(4, [11, 16], "bandpass", fs=SF, output="sos")

    def sigma_env(stage: str) -> np.ndarray:
        return np.abs(hilbert(sosfiltfilt(sos, _stage_rows(x[0], hyp, stage))))

    n2, rem = sigma_env("N2"), sigma_env("R")
    # Bursty sigma: the envelope's top percentile stands far above its median in N2 ...
    assert np.percentile(n2, 99) / np.median(n2) > 3.0
    # ... and sigma bursts are much larger than anything sigma-like in REM.
    assert np.percentile(n2, 99) > 1.5 * np.percentile(rem, 99)


def test_emg_lowest_in_rem_and_eye_movements(staged: tuple) -> None:
    _, x, hyp = staged
    emg = {s: np.std(_stage_rows(x[3], hyp, s)) for s in STAGES}
    assert emg["R"] == min(emg.values())
    assert emg["W"] == max(emg.values())

    # Rapid eye movements: E1 changes by > 60 uV within 50 ms in REM, hardly in NREM (where
    # E1 carries the large but slow frontal delta waves).
    def fast(stage: str) -> float:
        e1 = _stage_rows(x[2], hyp, stage) * 1e6
        return float(np.mean(np.abs(e1[12:] - e1[:-12]) > 60.0))

    assert fast("R") > 0.003
    assert fast("R") > 10 * max(fast("N2"), fast("N3"), 1e-5)


def test_heart_rate_and_accel(staged: tuple) -> None:
    _, x, hyp = staged

    def rr(stage: str) -> np.ndarray:
        ecg = _stage_rows(x[4], hyp, stage)
        peaks, _ = find_peaks(ecg, height=0.4e-3, distance=int(0.3 * SF))
        return np.diff(peaks) / SF

    rr3, rrr = rr("N3"), rr("R")
    assert 0.7 < np.mean(rr3) < 1.4  # 43-85 bpm
    assert np.mean(rr3) > np.mean(rrr)  # slower heart in N3 than in REM
    assert np.std(rrr) > np.std(rr3)  # more variable in REM
    acc = {s: np.std(_stage_rows(x[5], hyp, s)) for s in STAGES}
    assert acc["N3"] < 0.005 and abs(np.mean(_stage_rows(x[5], hyp, "N3"))) < 0.005
    assert acc["W"] > 2 * acc["N3"]


def test_amplitudes_in_volts(staged: tuple) -> None:
    _, x, hyp = staged
    c4 = _stage_rows(x[0], hyp, "N2")
    assert 5e-6 < np.std(c4) < 60e-6  # EEG: tens of microvolts
    assert 0.3e-3 < np.max(_stage_rows(x[4], hyp, "N2")) < 3e-3  # R peaks ~1 mV


# ----------------------------------------------------------------------- hypnogram


def test_hypnogram_proportions_and_cycles_over_seeds() -> None:
    fr, sol, rem_first, rem_last, n3_early, n_rem = [], [], [], [], [], []
    for seed in range(60):
        h = generate_hypnogram(np.random.default_rng(seed), 960)
        assert len(h) == 960 and set(h) <= set(STAGES)
        fr.append([stage_fractions(h)[s] for s in STAGES])
        onset = next(i for i, s in enumerate(h) if s in ("N2", "N3", "R"))
        sol.append(onset / 2.0)  # minutes
        assert set(h[:onset]) <= {"W", "N1"}
        runs = _runs(h, "R", merge=30)
        n_rem.append(len(runs))
        rem_first.append(runs[0][1] - runs[0][0])
        rem_last.append(runs[-2][1] - runs[-2][0])  # the last one may be cut by the morning
        n3 = np.array([s == "N3" for s in h])
        n3_early.append(n3[: int(960 * 0.4)].sum() / max(n3.sum(), 1))
    fr = np.mean(fr, axis=0)
    w, n1, n2, n3, r = fr
    assert 0.04 <= w <= 0.10 and 0.03 <= n1 <= 0.07
    assert 0.45 <= n2 <= 0.57 and 0.14 <= n3 <= 0.21 and 0.18 <= r <= 0.26
    assert all(5.0 <= s <= 20.0 for s in sol)
    assert np.mean(n3_early) > 0.8  # N3 mostly in the first two cycles
    assert np.mean(rem_last) > 2 * np.mean(rem_first)  # REM lengthens across the night
    assert 4 <= np.median(n_rem) <= 6  # ~90-min cycles in 8 h


def _runs(h: list[str], stage: str, merge: int = 0) -> list[tuple[int, int]]:
    runs: list[list[int]] = []
    for i, s in enumerate(h):
        if s != stage:
            continue
        if runs and i - runs[-1][1] <= merge:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1])
    return [(a, b) for a, b in runs]


def test_brief_awakenings_scattered() -> None:
    h = generate_hypnogram(np.random.default_rng(4), 960)
    onset = next(i for i, s in enumerate(h) if s == "N2")
    body = h[onset : 960 - 20]
    wake_runs = _runs(body, "W")
    assert len(wake_runs) >= 3
    assert max(b - a for a, b in wake_runs) <= 4  # brief: at most 2 min each


def test_given_hypnogram_is_honoured(tmp_path) -> None:
    hyp = ["W", "N1", "N2", "N2", "N3", "N3", "R"]
    sl = VirtualSleeper(seed=1, hypnogram=hyp, artifacts=False)
    assert sl.hypnogram == hyp
    assert sl.info.n_samples == len(hyp) * EP
    stages = [
        (e["t"], e["stage"]) for e in sl.world_events(0, sl.info.n_samples) if e["event"] == "stage"
    ]
    assert stages == [(0.0, "W"), (30.0, "N1"), (60.0, "N2"), (120.0, "N3"), (180.0, "R")]
    f = tmp_path / "h.csv"
    f.write_text("epoch_start_s,stage\n" + "".join(f"{30 * i},{s}\n" for i, s in enumerate(hyp)))
    assert read_hypnogram(f) == hyp
    assert open_source(f"sleeper://?hypnogram={f}&seed=2").hypnogram == hyp
    with pytest.raises(UserInputError, match="N5"):
        VirtualSleeper(seed=1, hypnogram=["W", "N5"])


# ----------------------------------------------------------------------- world events


def test_world_events_ordered_inside_night_and_by_range() -> None:
    sl = VirtualSleeper(seed=5, hours=3.0)
    n = sl.info.n_samples
    ev = sl.world_events(0, n)
    assert ev and all(e["kind"] == "world" for e in ev)
    ts = [e["t"] for e in ev]
    assert ts == sorted(ts)
    assert ts[0] >= 0.0 and ts[-1] < sl.info.duration
    kinds = {e["event"] for e in ev}
    assert {"stage", "arousal", "artifact"} <= kinds
    # Range queries partition the list.
    cut = n // 3
    assert sl.world_events(0, cut) + sl.world_events(cut, n) == ev
    assert all(e["t"] * SF < cut for e in sl.world_events(0, cut))
    # Stage events reproduce the hypnogram.
    hyp = sl.hypnogram
    for e in ev:
        if e["event"] == "stage":
            assert hyp[int(e["t"] // 30)] == e["stage"]
        if e["event"] == "arousal":
            assert e["cause"] in ("spontaneous", "nightmare") and 3.0 <= e["duration"] <= 15


def test_artifacts_flag_and_signatures() -> None:
    seen: set[str] = set()
    for seed in range(6):
        off = VirtualSleeper(seed=seed, hours=1.0, artifacts=False)
        assert not [e for e in off.world_events(0, off.info.n_samples) if e["event"] == "artifact"]
        sl = VirtualSleeper(seed=seed, hours=1.0, artifacts=True)
        arts = [e for e in sl.world_events(0, sl.info.n_samples) if e["event"] == "artifact"]
        assert 1 <= len(arts) <= 6  # rare: a handful per night
        for a in arts:
            seen.add(a["type"])
            i0 = int(round(a["t"] * SF))
            i1 = min(i0 + max(int(a["duration"] * SF), 1), sl.info.n_samples)
            x = sl.read(i0, i1)
            y = off.read(i0, i1)
            if a["type"] == "leadoff":
                row = sl.info.ch_names.index(a["channel"])
                assert np.isnan(x[row]).all()
            elif a["type"] == "saturation":
                row = sl.info.ch_names.index(a["channel"])
                assert np.nanmax(np.abs(x[row])) > 0.2  # beyond the ADC's +-187.5 mV
            else:
                assert not np.allclose(x, y)
        whole = off.read(0, off.info.n_samples)
        assert not np.isnan(whole).any() and np.abs(whole[:4]).max() < 0.01
    assert len(seen) >= 3


# ----------------------------------------------------------------------- stimuli


def _phase_targets(sl: VirtualSleeper, want: float, gap_s: float = 6.0) -> list[int]:
    out: list[int] = []
    for i in range(0, sl.info.n_samples - int(5 * SF), 5):
        if out and i - out[-1] < gap_s * SF:
            continue
        ph = sl.so_phase(i)
        if ph is not None and abs(np.angle(np.exp(1j * (ph - want)))) < 0.3:
            out.append(i)
    return out


def _evoked(want: float, level: float = 50.0) -> tuple[np.ndarray, list[dict], np.ndarray]:
    """Stimulus-locked mean difference (uV) of C4 between stimulated and sham night."""
    hyp = ["N3"] * 8
    stim = VirtualSleeper(seed=3, hypnogram=hyp, artifacts=False)
    sham = VirtualSleeper(seed=3, hypnogram=hyp, artifacts=False)
    onsets = _phase_targets(stim, want)
    assert len(onsets) > 20
    for i in onsets:
        stim.stimulate(Stimulus(i, "audio", level, 0.05, "so-upphase"))
    xs, xh = stim.read(0, stim.info.n_samples)[0], sham.read(0, sham.info.n_samples)[0]
    seg = int(2 * SF)
    trials = np.array([xs[i : i + seg] - xh[i : i + seg] for i in onsets]) * 1e6
    return trials.mean(axis=0), stim.world_events(0, stim.info.n_samples), trials


def test_upphase_sound_evokes_slow_wave_and_spindle() -> None:
    up, events, trials = _evoked(0.0)
    # Negative peak ~0.5 s after the sound, positive ~1 s, tens of microvolts.
    t_min = np.argmin(up) / SF
    assert 0.35 < t_min < 0.7 and up.min() < -30.0
    assert 0.8 < np.argmax(up[: int(1.4 * SF)]) / SF < 1.2 and up.max() > 20.0
    evoked = [e for e in events if e["event"] == "evoked"]
    assert evoked and all(abs(e["phase"]) < 20 for e in evoked)
    # A phase-locked spindle rides the positive peak: sigma energy there.
    # Its carrier phase varies, its timing does not: average the per-trial sigma envelope.
    sos = butter(4, [11, 16], "bandpass", fs=SF, output="sos")
    env = np.mean(np.abs(hilbert(sosfiltfilt(sos, trials, axis=1), axis=1)), axis=0)
    assert env[int(0.8 * SF) : int(1.3 * SF)].mean() > 2.0 * env[: int(0.3 * SF)].mean()
    down, _, _ = _evoked(np.pi)
    assert np.ptp(down) < 0.4 * np.ptp(up)  # down-phase sounds do much less


def test_stimulus_affects_only_later_samples_and_rereads() -> None:
    sl = VirtualSleeper(seed=3, hypnogram=["N3"] * 3, artifacts=False)
    before = sl.read(0, 2 * EP)
    onset = _phase_targets(sl, 0.0)[2]
    sl.stimulate(Stimulus(onset, "audio", 50.0, 0.05, "so-upphase"))
    after = sl.read(onset - 100, 2 * EP)
    np.testing.assert_array_equal(after[:, :100], before[:, onset - 100 : onset])
    assert not np.allclose(after[0, 100:], before[0, onset:])
    np.testing.assert_array_equal(sl.read(onset - 100, 2 * EP), after)


def test_loud_sounds_arouse_more_in_light_sleep() -> None:
    def arousals(stage: str, level: float) -> int:
        sl = VirtualSleeper(seed=9, hypnogram=[stage] * 40, artifacts=False)
        for i in range(0, sl.info.n_samples - EP, int(15 * SF)):
            sl.stimulate(Stimulus(i, "audio", level, 0.05, "test"))
        return sum(
            1
            for e in sl.world_events(0, sl.info.n_samples)
            if e["event"] == "arousal" and e["cause"] == "stimulus"
        )

    assert arousals("N2", 75.0) > arousals("N2", 40.0) + 5
    assert arousals("N2", 70.0) > arousals("N3", 70.0)


# ----------------------------------------------------------------------- sleeper:// spec


def test_spec_parsing_and_overrides() -> None:
    kw = parse_spec("sleeper://?seed=1&hours=8&artifacts=0&sfreq=250")
    assert kw == {"seed": 1, "hours": 8.0, "artifacts": False, "sfreq": 250.0}
    kw = parse_spec("sleeper://?seed=1&hours=8", seed=4, sfreq=100, channel=None)
    assert kw["seed"] == 4 and kw["sfreq"] == 100.0 and kw["hours"] == 8.0
    src = open_source("sleeper://?seed=2&hours=0.1&sfreq=128")
    assert isinstance(src, VirtualSleeper)
    assert src.info.sfreq == 128.0 and src.info.n_samples == 12 * 3840


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        ("sleeper://?seed=abc", "seed"),
        ("sleeper://?seed=-1", "seed"),
        ("sleeper://?hours=0", "hours"),
        ("sleeper://?hours=30", "hours"),
        ("sleeper://?sfreq=10", "sfreq"),
        ("sleeper://?artifacts=maybe", "artifacts"),
        ("sleeper://?hypnogram=/no/such/file.csv", "hypnogram"),
        ("sleeper://?colour=blue", "colour"),
        ("sleeper://?seed=1&seed=2", "seed"),
    ],
)
def test_spec_errors_name_the_key(spec: str, key: str) -> None:
    with pytest.raises(UserInputError, match=repr(key)) as err:
        open_source(spec)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("hours", "seconds"), [("0.001", "3.6"), ("0.008", "28.8")])
def test_a_night_shorter_than_one_epoch_is_refused(hours: str, seconds: str) -> None:
    """Not padded to 30 s in silence: one line says what is allowed and what came."""
    wanted = r"at least one 30-s epoch: 30 s = 0\.00834 h"
    with pytest.raises(UserInputError, match=rf"'hours' in sleeper://.*{wanted}") as err:
        open_source(f"sleeper://?hours={hours}")
    assert f"got '{hours}' ({seconds} s)" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UserInputError, match=wanted) as err:
        VirtualSleeper(seed=1, hours=float(hours))
    assert f"got {hours} ({seconds} s)" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("hours", [1 / 120, 0.00834, "0.00834", 0.01])
def test_one_epoch_is_the_shortest_night(hours: float | str) -> None:
    assert open_source("sleeper://", hours=hours).n_epochs == 1


def test_cli_refuses_a_night_shorter_than_one_epoch(tmp_path, capsys) -> None:
    from sim.cli import main

    out = tmp_path / "x"
    assert main(["-q", "simulate", "--hours", "0.001", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "0.00834 h" in err and "'0.001' (3.6 s)" in err
    assert not out.exists()


def test_keyword_option_errors() -> None:
    with pytest.raises(UserInputError, match="'sfreq'"):
        open_source("sleeper://?seed=1", sfreq="fast")
    with pytest.raises(UserInputError, match="'colour'"):
        open_source("sleeper://?seed=1", colour="blue")


def test_so_phase_is_the_offline_hilbert_phase() -> None:
    # The project's phase ground truth: Butterworth order 2, 0.5-2 Hz, zero-phase, Hilbert;
    # 0 deg = positive peak. The sleeper's own phase must agree with it in N3.
    sl = VirtualSleeper(seed=4, hypnogram=["N3"] * 6, artifacts=False)
    x = sl.read(0, sl.info.n_samples)[0]
    sos = butter(2, [0.5, 2.0], "bandpass", fs=SF, output="sos")
    offline = np.angle(hilbert(sosfiltfilt(sos, x)))
    d = [
        np.exp(1j * (offline[i] - sl.so_phase(i)))
        for i in range(EP, sl.info.n_samples - EP, 25)
        if sl.so_phase(i) is not None and sl.so_amplitude(i) > 40.0
    ]
    m = np.mean(d)
    assert len(d) > 500
    assert abs(np.degrees(np.angle(m))) < 15.0 and abs(m) > 0.9
    assert VirtualSleeper(seed=4, hypnogram=["R"] * 2).so_phase(EP) is None


def test_nightmare_raises_heart_rate_emg_and_arousals() -> None:
    sl = VirtualSleeper(seed=10, hours=8.0, artifacts=False)
    ev = sl.world_events(0, sl.info.n_samples)
    nm = [e for e in ev if e["event"] == "nightmare"]
    assert len(nm) == 1
    t0, dur = nm[0]["t"], nm[0]["duration"]
    assert all(s == "R" for s in sl.hypnogram[int(t0 // 30) : int((t0 + dur) // 30)])
    attempts = [e for e in ev if e["event"] == "arousal" and e["cause"] == "nightmare"]
    assert attempts and all(t0 <= e["t"] < t0 + dur for e in attempts)
    a, b = int(t0 * SF), int((t0 + dur) * SF)
    during = sl.read(a, b)
    before = sl.read(a - 2 * EP, a)  # REM too (the nightmare starts >= 2 epochs into it)

    def bpm(ecg: np.ndarray) -> float:
        peaks, _ = find_peaks(ecg, height=0.4e-3, distance=int(0.3 * SF))
        return 60.0 * SF / float(np.mean(np.diff(peaks)))

    assert bpm(during[4]) > bpm(before[4]) + 8.0
    assert np.std(during[3]) > 1.5 * np.std(before[3])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        # A short row: no stage column (an IndexError traceback before).
        (b"epoch_start_s,stage\n0,W\n30\n60,N2\n", r"h\.csv.* line 3\b.*stage"),
        # Not UTF-8 (a UnicodeDecodeError traceback before).
        (b"epoch_start_s,stage\n0,W\n\n30,N\xe92\n", r"h\.csv.* line 4\b.*UTF-8"),
        # Line numbers are those of the file: the header and blank lines count.
        (b"epoch_start_s,stage\n0,W\n\n30,N7\n", r"'N7' in .*h\.csv line 4\b"),
        (b"W\nN2\nN7\n", r"'N7' in .*h\.csv line 3\b"),
    ],
)
def test_bad_hypnogram_files_name_the_file_and_line(tmp_path, content, message) -> None:
    f = tmp_path / "h.csv"
    f.write_bytes(content)
    with pytest.raises(UserInputError, match=message) as err:
        read_hypnogram(f)
    assert "\n" not in str(err.value)
    with pytest.raises(UserInputError, match="'hypnogram'.*" + message) as err:
        open_source(f"sleeper://?hypnogram={f}")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "content",
    [b"\xef\xbb\xbfW\r\nN2\r\nR\r\n", b"\xef\xbb\xbfstage,epoch_start_s\nW,0\nN2,30\nR,60\n"],
)
def test_hypnogram_file_with_a_byte_order_mark(tmp_path, content) -> None:
    f = tmp_path / "h.csv"
    f.write_bytes(content)
    assert read_hypnogram(f) == ["W", "N2", "R"]
