"""Tests of the causal online stager (firmware/staging.py) and its bench."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from firmware.stager import EpochDecision
from firmware.staging import OnlineStager, RunningNorm, epoch_features, feature_names, score
from hal.base import STAGES

SF = 250.0
N = round(30 * SF)
DREAMS = Path(__file__).resolve().parents[2] / "shared" / "data" / "dreams"


def _epochs(seed: int, n_epochs: int, rows: int = 3) -> np.ndarray:
    """Pink-ish noise epochs with varying slow-wave and alpha content (µV)."""
    rng = np.random.default_rng(seed)
    t = np.arange(N) / SF
    out = np.empty((n_epochs, rows, N))
    for k in range(n_epochs):
        base = np.cumsum(rng.standard_normal((rows, N)), axis=1)
        base -= base.mean(axis=1, keepdims=True)
        base *= 20 / base.std()
        slow = rng.uniform(0, 80) * np.sin(2 * np.pi * 1.0 * t + rng.uniform(0, 6))
        alpha = rng.uniform(0, 15) * np.sin(2 * np.pi * 10.0 * t)
        out[k] = base + rng.standard_normal((rows, N)) * 5
        out[k, 0] += slow + alpha
    return out


def _run(stager: OnlineStager, epochs: np.ndarray, bad: set[int] = frozenset()) -> dict:
    decided: dict[int, tuple[int, EpochDecision]] = {}
    for k, ep in enumerate(epochs):
        eog = ep[1] if stager.has_eog else None
        emg = ep[2] if stager.has_emg else None
        for d in stager.push_epoch(ep[0], eog, emg, bad=k in bad):
            decided[d.epoch] = (k, d)
    for d in stager.flush():
        decided[d.epoch] = (len(epochs), d)
    return decided


@pytest.mark.parametrize(("has_eog", "has_emg"), [(False, False), (True, True)])
def test_causal_beyond_one_epoch(has_eog: bool, has_emg: bool) -> None:
    """Changing epochs after k+1 leaves the decision (and its posterior) for k unchanged."""
    ep = _epochs(1, 14)
    other = ep.copy()
    other[8:] = _epochs(2, 6) * 3.0
    a = _run(OnlineStager(SF, has_eog, has_emg), ep)
    b = _run(OnlineStager(SF, has_eog, has_emg), other)
    for k in range(7):  # decisions for 0..6 only saw epochs up to 7
        assert a[k][1] == b[k][1]
    # ...and the look-ahead is real: some later posterior differs.
    assert any(a[k][1].features != b[k][1].features for k in range(7, 14))


def test_one_epoch_latency_and_order() -> None:
    """Each epoch is released exactly when the next one arrives; flush releases the last."""
    st = OnlineStager(SF, has_eog=False, has_emg=False)
    ep = _epochs(3, 5)
    assert st.push_epoch(ep[0, 0], None, None, bad=False) == []
    for k in range(1, 5):
        out = st.push_epoch(ep[k, 0], None, None, bad=False)
        assert [d.epoch for d in out] == [k - 1]
    assert [d.epoch for d in st.flush()] == [4]
    assert st.flush() == []


def test_eeg_only_two_rows_and_stages() -> None:
    """EEG alone (two rows) works and gives valid stages with posteriors summing to 1."""
    st = OnlineStager(SF, has_eog=False, has_emg=False)
    ep = _epochs(4, 6)
    dec = {}
    for k in range(6):
        for d in st.push_epoch(ep[k, :2], None, None, bad=False):
            dec[d.epoch] = (k, d)
    for d in st.flush():
        dec[d.epoch] = (6, d)
    assert sorted(dec) == list(range(6))
    for _, d in dec.values():
        assert d.stage in STAGES
        p = sum(d.features[f"p_{s}"] for s in STAGES)
        assert p == pytest.approx(1.0, abs=1e-3)


def test_bad_epochs_get_a_stage_and_the_flag() -> None:
    """A bad or non-finite epoch gets a stage, the flag, and leaves the normaliser alone."""
    st = OnlineStager(SF, has_eog=True, has_emg=True)
    ep = _epochs(5, 8)
    ep[5, 0, 100:200] = np.nan  # lead-off inside epoch 5
    dec = _run(st, ep, bad={3, 4})
    flags = {k: d.bad_signal for k, (_, d) in dec.items()}
    assert flags == {k: k in (3, 4, 5) for k in range(8)}
    assert all(dec[k][1].stage in STAGES for k in range(8))
    # A bad epoch carries no evidence: its stage is the previous epoch's.
    assert dec[3][1].stage == dec[2][1].stage
    assert st.norm.n == 5


def test_bad_at_start_is_wake() -> None:
    """Before any good epoch nothing is known: the stager says W."""
    st = OnlineStager(SF, has_eog=False, has_emg=False)
    ep = _epochs(6, 3)
    dec = _run(st, ep, bad={0, 1})
    assert dec[0][1].stage == "W" and dec[0][1].bad_signal


def test_cost_declared_and_within_budget() -> None:
    """The declared cost grows with channels and fits in 1 % of a 64-MHz core."""
    eeg = OnlineStager(SF, has_eog=False, has_emg=False).cycles_per_epoch()
    full = OnlineStager(SF, has_eog=True, has_emg=True).cycles_per_epoch()
    assert 100_000 < eeg < full
    assert full < 0.01 * 64e6 * 30


def test_features_rate_independent() -> None:
    """Features of a 0.5-20 Hz signal agree at 250 Hz and at 100 Hz."""
    rng = np.random.default_rng(7)
    t = np.arange(N) / SF
    x = 40 * np.sin(2 * np.pi * 1.2 * t) + 10 * np.sin(2 * np.pi * 13 * t) + rng.normal(0, 3, N)
    f250 = epoch_features(x, None, None, SF)
    from scipy.signal import resample_poly

    y = resample_poly(x, 2, 5)
    f100 = epoch_features(y, None, None, 100.0)
    names = feature_names(False, False)
    for name in ("rel_slow", "rel_sigma", "f_median", "swa_frac"):
        i = names.index(name)
        assert f100[i] == pytest.approx(f250[i], abs=0.05)


def test_running_norm_prior_then_data() -> None:
    """With no data the prior decides; with much data the night's own statistics do."""
    rn = RunningNorm(np.array([0.0]), np.array([1.0]), prior_epochs=20)
    assert rn.z(np.array([2.0]))[0] == pytest.approx(2.0)
    for v in np.random.default_rng(0).normal(10.0, 2.0, 2000):
        rn.update(np.array([v]))
    assert rn.z(np.array([10.0]))[0] == pytest.approx(0.0, abs=0.2)


def test_score() -> None:
    """Accuracy and kappa of a known confusion; unknown truth is skipped."""
    s = score(["W", "W", "N2", "N2", "?"], ["W", "N2", "N2", "N2", "W"])
    assert s["n"] == 4 and s["accuracy"] == pytest.approx(0.75)
    assert s["kappa"] == pytest.approx(0.5)


def test_virtual_night() -> None:
    """A short virtual night (unseen seed) is staged well against its hypnogram."""
    from bench.staging import run_stager, virtual_recording

    rec = virtual_recording(5100, 2.0)
    for aux in (False, True):
        pred = run_stager(rec, use_aux=aux)
        res = score(rec.truth, pred)
        assert res["n"] == 240
        assert res["accuracy"] >= 0.85, (aux, res)


#: Figures measured with the shipped model (deterministic); the test guards against
#: regressions. Targets of issue 4 (0.78 / 0.65) are NOT reached on DREAMS: see
#: docs/staging.md.
DREAMS_ACCURACY = {
    "excerpt1 C3-A1": 0.75,
    "excerpt3 C3-A1": 0.53,
    "excerpt4 CZ-A1": 0.68,
    "excerpt3 C3-A1+EOG+EMG": 0.56,
}


@pytest.mark.skipif(not DREAMS.exists(), reason="DREAMS excerpts not available")
def test_dreams_excerpts() -> None:
    """The figures reported in docs/staging.md hold on the DREAMS excerpts."""
    from bench.staging import _align, dreams_recordings, run_stager

    pooled_t: list[str] = []
    pooled_p: list[str] = []
    recs = dreams_recordings(DREAMS)
    assert sorted(r.name for r in recs) == sorted(DREAMS_ACCURACY)
    for rec in recs:
        t, p = _align(rec.truth, run_stager(rec, use_aux=rec.eog is not None))
        assert len(t) == 60
        if rec.eog is None:
            pooled_t += t
            pooled_p += p
        assert score(t, p)["accuracy"] >= DREAMS_ACCURACY[rec.name] - 1e-9, rec.name
    res = score(pooled_t, pooled_p)
    assert res["accuracy"] >= 0.65
    assert res["kappa"] >= 0.44


def test_rk_hypnogram(tmp_path: Path) -> None:
    """5-s R&K scores: majority per 30 s, S3+S4 = N3, movement/unknown not scored."""
    from bench.staging import read_rk_hypnogram

    f = tmp_path / "h.txt"
    scores = [5] * 6 + [1, 0, 0, 2, 1, 1] + [-1] * 4 + [2, 2] + [4, 4, 4, 4, 3, 3]
    f.write_text("[Hypnogram]\n" + "\n".join(map(str, scores)) + "\n")
    assert read_rk_hypnogram(f) == ["W", "N3", None, "R"]


def test_bench_last_line_is_json(capsys: pytest.CaptureFixture[str]) -> None:
    """The bench prints a table and, as its last line, one JSON object."""
    import json

    from bench.staging import main

    assert main(["--virtual", "1", "--hours", "0.5", "--no-yasa"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    data = json.loads(last)
    (name,) = data["recordings"]
    assert data["recordings"][name]["online"]["n"] == 60
    assert data["pooled"]["virtual"]["online"]["accuracy"] > 0.8


def _virtual(hypnogram: list[str], seed: int):
    from bench.staging import Recording
    from sim.sleeper import VirtualSleeper

    sl = VirtualSleeper(seed=seed, hypnogram=hypnogram, artifacts=False)
    x = sl.read(0, sl.info.n_samples) * 1e6
    info = sl.info
    rows = [x[info.picks(role)[0]] for role in ("eeg", "eog", "emg")]
    return Recording("virtual", info.sfreq, *rows, list(sl.hypnogram))


@pytest.mark.parametrize("aux", [False, True])
def test_a_recording_that_starts_mid_night_or_is_mostly_wake(aux: bool) -> None:
    """The running normalisation needs no wake at the start, and wake is not mistaken for
    sleep when a recording holds little else."""
    from bench.staging import run_stager

    mid_night = ["N3"] * 20 + ["N2"] * 20 + ["R"] * 15 + ["N2"] * 25 + ["N3"] * 15
    mostly_wake = ["W"] * 60 + ["N1"] * 5 + ["W"] * 30 + ["N1"] * 6 + ["N2"] * 10 + ["W"] * 40
    rec = _virtual(mid_night, seed=3)
    pred = run_stager(rec, use_aux=aux)
    assert score(rec.truth, pred)["accuracy"] >= 0.85
    assert pred[:10] == ["N3"] * 10
    rec = _virtual(mostly_wake, seed=3)
    pred = run_stager(rec, use_aux=aux)
    wake = [p for t, p in zip(rec.truth, pred, strict=True) if t == "W"]
    assert np.mean([p == "W" for p in wake]) >= 0.9
