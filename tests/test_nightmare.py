"""Nightmares: the sleeper's episodes and its response to haptic pulses, the REM-distress
detector, and nightmare-guard on virtual nights against its sham."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import distress_source
from scipy.signal import find_peaks

from bench.nightmare import HYPNOGRAM, compare
from firmware.detectors import RemDistressDetector
from firmware.program import parse_program
from hal import open_source
from hal.base import Stimulus, UserInputError
from sim.sleeper import VirtualSleeper

SF = 250.0


def _night(seed: int = 2) -> VirtualSleeper:
    return VirtualSleeper(seed=seed, hypnogram=HYPNOGRAM, nightmares=3, artifacts=False)


def _episodes(sl: VirtualSleeper) -> list[tuple[dict, dict]]:
    ev = sl.world_events(0, sl.info.n_samples)
    starts = [e for e in ev if e["event"] == "nightmare"]
    ends = [e for e in ev if e["event"] == "nightmare_end"]
    return list(zip(starts, ends, strict=True))


def _bpm(ecg: np.ndarray) -> float:
    peaks, _ = find_peaks(ecg, height=0.4e-3, distance=int(0.3 * SF))
    return 60.0 * SF / float(np.mean(np.diff(peaks)))


def test_nightmares_option_plants_them_in_rem_and_is_validated():
    sl = _night()
    eps = _episodes(sl)
    assert len(eps) == 3
    for start, end in eps:
        assert end["cause"] == "plan" and end["t"] - start["t"] == start["duration"]
        assert all(s == "R" for s in sl.hypnogram[int(start["t"] // 30) : int(end["t"] // 30)])
    assert "nightmares=3" in sl.info.description
    src = open_source("sleeper://?seed=2&hours=0.2&nightmares=0")
    assert not [e for e in src.world_events(0, src.info.n_samples) if e["event"] == "nightmare"]
    for bad in ("-1", "101", "x"):
        with pytest.raises(UserInputError, match="nightmares"):
            open_source(f"sleeper://?nightmares={bad}")
    # The rest of the night is the one without the option.
    plain = VirtualSleeper(seed=2, hypnogram=HYPNOGRAM, nightmares=0, artifacts=False)
    np.testing.assert_array_equal(plain.read(0, 7500), sl.read(0, 7500))


def test_a_strong_pulse_ends_the_nightmare_and_the_past_stays_as_it_was():
    sl = _night()
    (start, end), *_ = _episodes(sl)
    onset = int((start["t"] + 20.0) * SF)
    before = sl.read(0, onset)
    ended = None
    for k in range(10):  # a few pulses at 55 %: each ends it with probability ~0.95
        sl.stimulate(Stimulus(onset + k * 1250, "haptic", 55.0, 0.2, "test"))
        eps = _episodes(sl)
        if eps[0][1]["cause"] != "plan":
            ended = eps[0][1]
            break
    assert ended is not None and ended["cause"] in ("haptic", "awakening")
    assert ended["t"] < end["t"] and ended["duration"] == pytest.approx(
        ended["t"] - start["t"], abs=1e-3
    )
    np.testing.assert_array_equal(sl.read(0, onset), before)  # causal: nothing before changed
    # The heart calms to the REM level; the nightmare's later arousal attempts are gone.
    a = int((ended["t"] + 15.0) * SF)
    calm = _bpm(sl.read(a, a + int(20 * SF))[4])
    b = int((start["t"] + 15.0) * SF)
    racing = _bpm(VirtualSleeper(seed=2, hypnogram=HYPNOGRAM, nightmares=3).read(b, b + 5000)[4])
    assert calm < racing - 8.0
    attempts = [
        e
        for e in sl.world_events(0, sl.info.n_samples)
        if e["event"] == "arousal" and e["cause"] == "nightmare" and e["t"] >= ended["t"]
    ]
    assert not [e for e in attempts if e["t"] < end["t"]]


def test_pulse_effect_rises_with_intensity_and_the_same_pulses_give_the_same_night():
    def outcome(level: float, seed: int) -> str:
        sl = _night(seed)
        (start, _), *_ = _episodes(sl)
        sl.stimulate(Stimulus(int((start["t"] + 15.0) * SF), "haptic", level, 0.2, "test"))
        return _episodes(sl)[0][1]["cause"]

    weak = [outcome(10.0, s) for s in range(1, 31)]
    strong = [outcome(50.0, s) for s in range(1, 31)]
    assert weak.count("plan") > 20  # a weak pulse rarely ends it
    assert strong.count("plan") < 10
    assert strong.count("awakening") < 10  # ending it rarely wakes the sleeper
    assert [outcome(50.0, s) for s in range(1, 6)] == strong[:5]  # reproducible


def test_distress_detector_finds_the_episode_and_is_chunk_invariant():
    src = distress_source(240.0, SF, seed=3)
    x = src.read(0, src.info.n_samples)
    rows = np.stack([x[1] * 1e6, x[2] * 1e6, x[3]])
    whole = RemDistressDetector(SF, 8).scan(rows, 0)
    det = RemDistressDetector(SF, 8)
    pieces = []
    for i in range(0, rows.shape[1], 777):
        pieces += det.scan(rows[:, i : i + 777], i)
    assert pieces == whole
    onsets = [e for e in whole if e.kind == "onset"]
    ends = [e for e in whole if e.kind == "end"]
    assert len(onsets) == 1 and len(ends) == 1
    assert 100.0 < onsets[0].decision_index / SF < 115.0
    assert 170.0 < ends[0].decision_index / SF < 185.0
    # Without a muscle or movement sign the racing heart alone is not distress.
    rows_quiet = rows.copy()
    rows_quiet[1] = np.random.default_rng(0).standard_normal(rows.shape[1]) * 2.0
    rows_quiet[2] = 0.0
    quiet = RemDistressDetector(SF, 8).scan(rows_quiet, 0)
    assert not [e for e in quiet if e.kind == "onset"]


@pytest.mark.parametrize("gain", [1.0, -3.0])
def test_distress_detector_reads_an_inverted_wandering_lead_of_any_gain(gain):
    # A real lead may be inverted and at another gain on a baseline that wanders by
    # millivolts: the episode is the same one, and the calm minutes stay calm (the raw
    # form counted drift as beats: 165 'distress' events in a calm real recording).
    src = distress_source(240.0, SF, seed=3)
    x = src.read(0, src.info.n_samples)
    t = np.arange(x.shape[1]) / SF
    ecg = gain * x[1] * 1e6 + 4000.0 * np.sin(2 * np.pi * 0.25 * t)
    events = RemDistressDetector(SF, 8).scan(np.stack([ecg, x[2] * 1e6, x[3]]), 0)
    onsets = [e.decision_index / SF for e in events if e.kind == "onset"]
    ends = [e.decision_index / SF for e in events if e.kind == "end"]
    assert len(onsets) == 1 and 100.0 < onsets[0] < 115.0
    assert len(ends) == 1 and 170.0 < ends[0] < 185.0


def test_escalation_is_validated_naming_the_field():
    base = {
        "name": "g",
        "gate": {"stages": ["R"]},
        "trigger": {"kind": "rem-distress", "refractory_s": 5.0},
        "stimulus": {"modality": "haptic", "level_db": 50.0, "duration_s": 0.2},
    }
    prog = parse_program({**base, "escalation": {"start": 20.0, "step": 10.0, "step_s": 5.0}})
    assert prog.escalation.start == 20.0
    with pytest.raises(UserInputError, match="escalation.start"):
        parse_program({**base, "escalation": {"start": 70.0}})  # above the top
    with pytest.raises(UserInputError, match="escalation.step_s"):
        parse_program({**base, "escalation": {"step_s": 0.1}})
    with pytest.raises(UserInputError, match="rem-distress"):
        parse_program({**base, "trigger": {"kind": "echt"}, "escalation": {"step": 5.0}})


def test_nightmare_guard_shortens_nightmares_without_waking_the_sleeper():
    """Done-when of the nightmare-guard issue, on 4 virtual nights with 3 nightmares each."""
    res = compare([1, 2, 3, 4], nightmares=3)
    assert res["episodes"] == 12
    mean = res["mean_duration_s"]
    assert mean["guard"] < 0.5 * mean["sham"]
    assert res["shorter"] >= 10
    assert res["share_woken"] < 0.5
    # The sham (nothing played) never trips; the guard only through the last resort.
    assert res["trips"]["sham"] == {}
    assert set(res["trips"]["guard"]) <= {"trapped sleeper"}
    assert sum(res["trips"]["guard"].values()) <= 1
