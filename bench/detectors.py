"""Online event detectors on real EEG: spindles vs experts, slow waves vs YASA, speed.

Each DREAMS excerpt (single EEG channel, resampled to the device rate of 250 Hz) runs
causally through :mod:`firmware.detectors` in one scan (the result is identical in any
chunking; the tests check it). Figures:

* spindles: F1 of the completed detections against expert 1 (``Visual_scoring1``) with
  overlap matching (a detection is a true positive when it overlaps an expert spindle, an
  expert spindle is found when a detection overlaps it), beside YASA's offline
  ``spindles_detect`` (defaults) scored the same way and expert 2 against expert 1; for
  the early cues (``confirmed=False``): the share that fall inside an expert spindle (cue
  precision), the share of expert spindles cued, and the median latency from expert onset
  to the cue;
* slow waves: F1 of the causal detections against YASA's offline ``sw_detect`` (defaults,
  no hypnogram) with the same overlap matching, and the median onset offset;
* arousals: count per hour and the share of expert wake/movement 5-s segments after sleep
  that an arousal overlaps (DREAMS has no arousal labels; this is a plausibility check);
* speed: an 8-h night at 250 Hz (the excerpts tiled) in one call and in 7,500-sample
  chunks, compile time excluded.

One parameter set for everything: the defaults of the detectors. Tuning looked at
excerpt 1 only (spindle F1 against expert 1 and slow-wave F1 against YASA); excerpts 3 and
4 were not looked at while choosing parameters.

Usage::

    python -m bench.detectors --dreams ../shared/data/dreams

Prints a table and, as its last line, one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

from bench._json import json_line
from bench.phase import DREAMS_EXCERPTS, FS, load_dreams
from firmware.detectors import ArousalDetector, Event, SlowWaveDetector, SpindleDetector

BLOCK = 8
CHUNK = 7500
NIGHT_S = 8 * 3600


def read_scoring(path: Path) -> np.ndarray:
    """Expert spindles as (onset_s, end_s) rows from a DREAMS ``Visual_scoring`` file."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2:
            on, dur = float(parts[0]), float(parts[1])
            rows.append((on, on + dur))
    return np.array(rows, dtype=float).reshape(-1, 2)


def _overlaps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bool matrix: interval ``a[i]`` overlaps ``b[j]`` (closed intervals, seconds)."""
    if a.size == 0 or b.size == 0:
        return np.zeros((len(a), len(b)), dtype=bool)
    return (a[:, None, 0] <= b[None, :, 1]) & (b[None, :, 0] <= a[:, None, 1])


def overlap_f1(detected: np.ndarray, truth: np.ndarray) -> dict:
    """Precision, recall and F1 by overlap matching of (onset, end) rows in seconds."""
    ov = _overlaps(detected, truth)
    precision = float(ov.any(axis=1).mean()) if len(detected) else 0.0
    recall = float(ov.any(axis=0).mean()) if len(truth) else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "n": len(detected),
        "n_truth": len(truth),
        "precision": round(precision, 3),
        "recall": round(recall, 3),
        "f1": round(f1, 3),
    }


def _intervals(events: list[Event]) -> np.ndarray:
    rows = [(e.onset_index / FS, e.end_index / FS) for e in events]
    return np.array(rows, dtype=float).reshape(-1, 2)


def spindle_figures(x: np.ndarray, truth: np.ndarray) -> tuple[dict, dict]:
    """Completed-spindle F1 and early-cue figures of the causal detector."""
    events = SpindleDetector(FS, BLOCK).scan(x, 0)
    done = [e for e in events if e.confirmed]
    cues = [e for e in events if not e.confirmed]
    fig = overlap_f1(_intervals(done), truth)
    cue_t = np.array([e.decision_index / FS for e in cues])
    inside = (
        (cue_t[:, None] >= truth[None, :, 0]) & (cue_t[:, None] <= truth[None, :, 1])
        if cue_t.size and truth.size
        else np.zeros((cue_t.size, len(truth)), dtype=bool)
    )
    lat = [cue_t[inside[:, j]].min() - truth[j, 0] for j in range(len(truth)) if inside[:, j].any()]
    early = {
        "n": int(cue_t.size),
        "in_spindle": round(float(inside.any(axis=1).mean()), 3) if cue_t.size else 0.0,
        "cued": round(float(inside.any(axis=0).mean()), 3) if len(truth) else 0.0,
        "latency_s": round(float(np.median(lat)), 3) if lat else float("nan"),
        "delay_after_onset_s": round(
            float(np.median([(e.decision_index - e.onset_index) / FS for e in cues])), 3
        )
        if cues
        else float("nan"),
    }
    return fig, early


def yasa_spindles(x: np.ndarray) -> np.ndarray:
    """YASA's offline spindles (defaults) as (onset, end) seconds."""
    import yasa

    sp = yasa.spindles_detect(x, sf=FS, verbose="error")
    if sp is None:
        return np.empty((0, 2))
    df = sp.summary()
    return df[["Start", "End"]].to_numpy(dtype=float)


def yasa_slow_waves(x: np.ndarray) -> np.ndarray:
    """YASA's offline slow waves (defaults, no hypnogram) as (onset, end) seconds."""
    import yasa

    sw = yasa.sw_detect(x, sf=FS, verbose="error")
    if sw is None:
        return np.empty((0, 2))
    df = sw.summary()
    return df[["Start", "End"]].to_numpy(dtype=float)


def slow_wave_figures(x: np.ndarray, reference: np.ndarray) -> dict:
    """Agreement of the causal slow waves with YASA's offline ones."""
    events = SlowWaveDetector(FS, BLOCK).scan(x, 0)
    det = _intervals(events)
    fig = overlap_f1(det, reference)
    ov = _overlaps(det, reference)
    offs = [det[i, 0] - reference[ov[i]][0, 0] for i in range(len(det)) if ov[i].any()]
    fig["onset_offset_s"] = round(float(np.median(offs)), 3) if offs else float("nan")
    fig["decision_after_end_s"] = (
        round(float(np.median([(e.decision_index - e.end_index) / FS for e in events])), 3)
        if events
        else float("nan")
    )
    return fig


def arousal_figures(x: np.ndarray, stages: np.ndarray, stage_len_s: float) -> dict:
    """Arousal rate and overlap with expert wake after sleep (a plausibility check)."""
    events = [e for e in ArousalDetector(FS, BLOCK).scan(x, 0) if e.confirmed]
    det = _intervals(events)
    hours = x.size / FS / 3600
    seg = np.arange(len(stages))
    is_wake = np.isin(stages, ("W",))
    asleep = np.isin(stages, ("N1", "N2", "N3", "R"))
    # Wake segments that follow sleep (the sleeper woke up): an arousal should mark them.
    after_sleep = is_wake & np.concatenate([[False], asleep[:-1]])
    wake_iv = np.stack([seg * stage_len_s, (seg + 1) * stage_len_s], axis=1)[after_sleep]
    ov = _overlaps(wake_iv, det)
    in_sleep = 0
    for on, _ in det:
        k = min(int(on / stage_len_s), len(stages) - 1)
        in_sleep += bool(np.isin(stages[k], ("N2", "N3")))
    return {
        "n": len(events),
        "per_hour": round(len(events) / hours, 1),
        "wake_onsets": int(after_sleep.sum()),
        "wake_onsets_marked": round(float(ov.any(axis=1).mean()), 3) if len(wake_iv) else None,
        "share_onset_in_n2n3": round(in_sleep / len(events), 3) if events else None,
    }


def speed(recordings: list[np.ndarray]) -> dict:
    """Seconds per 8-h night at 250 Hz, one call and 7,500-sample chunks."""
    x = np.concatenate(recordings)
    night = np.tile(x, int(np.ceil(NIGHT_S * FS / x.size)))[: int(NIGHT_S * FS)]
    out: dict = {}
    makers = {
        "spindle": lambda: SpindleDetector(FS, BLOCK),
        "slow_wave": lambda: SlowWaveDetector(FS, BLOCK),
        "arousal": lambda: ArousalDetector(FS, BLOCK),
    }
    for name, make in makers.items():
        make().scan(night[:CHUNK], 0)  # compile (numba cache) outside the timing
        t0 = time.perf_counter()
        make().scan(night, 0)
        whole = time.perf_counter() - t0
        det = make()
        t0 = time.perf_counter()
        for s in range(0, night.size, CHUNK):
            det.scan(night[s : s + CHUNK], s)
        chunked = time.perf_counter() - t0
        out[name] = {
            "whole_s": round(whole, 3),
            "chunks_7500_s": round(chunked, 3),
            "cycles_per_sample": det.cycles_per_sample,
            "mcu_load": round(det.cycles_per_sample * FS / 64e6, 5),
        }
    return out


def run(folder: Path) -> dict:
    """All figures on the DREAMS excerpts in ``folder``."""
    result: dict = {"excerpts": {}}
    signals = []
    for name in DREAMS_EXCERPTS:
        rec = load_dreams(folder, name)
        x = rec.x_uv
        signals.append(x)
        e1 = read_scoring(folder / f"Visual_scoring1_{name}.txt")
        e2 = read_scoring(folder / f"Visual_scoring2_{name}.txt")
        ours, early = spindle_figures(x, e1)
        ref_sw = yasa_slow_waves(x)
        result["excerpts"][name] = {
            "spindle": ours,
            "spindle_early": early,
            "spindle_yasa": overlap_f1(yasa_spindles(x), e1),
            "spindle_expert2": overlap_f1(e2, e1),
            "slow_wave_vs_yasa": slow_wave_figures(x, ref_sw),
            "arousal": arousal_figures(x, rec.stages, rec.stage_len_s),
        }
    ex = result["excerpts"]
    result["mean_f1"] = {
        key: round(float(np.mean([ex[n][key]["f1"] for n in ex])), 3)
        for key in ("spindle", "spindle_yasa", "spindle_expert2", "slow_wave_vs_yasa")
    }
    result["speed_8h"] = speed(signals)
    return result


def format_table(result: dict) -> str:
    """The main figures as a fixed-width table."""
    lines = [
        f"{'excerpt':<9} {'sp F1':>6} {'P':>6} {'R':>6} {'YASA':>6} {'exp2':>6} "
        f"{'cue in':>7} {'cued':>6} {'cue lat':>8} {'SW F1':>6} {'SW P':>6} {'SW R':>6} "
        f"{'ar/h':>6}"
    ]
    for name, r in result["excerpts"].items():
        sp, ea, sw = r["spindle"], r["spindle_early"], r["slow_wave_vs_yasa"]
        lines.append(
            f"{name:<9} {sp['f1']:>6.3f} {sp['precision']:>6.3f} {sp['recall']:>6.3f} "
            f"{r['spindle_yasa']['f1']:>6.3f} {r['spindle_expert2']['f1']:>6.3f} "
            f"{ea['in_spindle']:>7.3f} {ea['cued']:>6.3f} {ea['latency_s']:>8.3f} "
            f"{sw['f1']:>6.3f} {sw['precision']:>6.3f} {sw['recall']:>6.3f} "
            f"{r['arousal']['per_hour']:>6.1f}"
        )
    m = result["mean_f1"]
    lines.append(
        f"{'mean':<9} {m['spindle']:>6.3f} {'':>6} {'':>6} {m['spindle_yasa']:>6.3f} "
        f"{m['spindle_expert2']:>6.3f} {'':>7} {'':>6} {'':>8} {m['slow_wave_vs_yasa']:>6.3f}"
    )
    for name, s in result["speed_8h"].items():
        lines.append(
            f"speed {name:<10} 8-h night: {s['whole_s']:.3f} s whole, "
            f"{s['chunks_7500_s']:.3f} s in 7500-sample chunks; "
            f"{s['cycles_per_sample']} cycles/sample = {100 * s['mcu_load']:.2f} % of 64 MHz"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(
        prog="python -m bench.detectors", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--dreams", type=Path, required=True, help="folder of the DREAMS excerpts")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if not args.dreams.is_dir():
        print(f"{args.dreams}: not a folder", file=sys.stderr)
        return 2
    result = run(args.dreams)
    print(format_table(result))
    print(json_line(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
