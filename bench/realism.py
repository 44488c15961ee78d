"""How real does the virtual sleeper look to someone else's stager?

Generates a night with :class:`sim.sleeper.VirtualSleeper`, stages it with YASA's
pre-trained classifier (``yasa.SleepStaging`` on C4-M1, E1-M2 and Chin, the night
resampled to 100 Hz as YASA would do itself) and compares with the hypnogram that
generated the night.

Usage::

    python -m bench.realism --hours 8 --seed 1

The last line printed is one JSON object::

    {"hours": 8.0, "seed": 1, "yasa_accuracy": ..., "yasa_kappa": ...,
     "confusion": {"W": {"W": n, "N1": n, ...}, ...}, "generate_s": ...}

``confusion[true][predicted]`` counts epochs; ``generate_s`` is the wall time to generate
the night (all channels, sequential 30-s reads).
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np

from bench._json import json_line
from hal.base import STAGES
from sim.sleeper import VirtualSleeper

logger = logging.getLogger(__name__)

#: Range of the headband ADC (V): what a real front-end would deliver for saturated input.
ADC_RANGE_V = 0.1875


def generate_night(
    seed: int,
    hours: float,
    *,
    sfreq: float = 250.0,
    artifacts: bool = True,
    block_s: float = 30.0,
    channels: tuple[str, ...] = ("C4-M1", "E1-M2", "Chin"),
) -> tuple[np.ndarray, list[str], list[str], float, float]:
    """Generate a night by sequential reads and keep ``channels``.

    All six channels are generated (that is what is timed); only ``channels`` are kept,
    in a buffer touched before the clock starts so page faults are not counted.

    Returns
    -------
    data : ndarray, shape (len(channels), n_samples)
        Volts, NaN where a lead was off.
    ch_names : list of str
        ``channels``.
    hypnogram : list of str
        The generating hypnogram.
    sfreq : float
        Sampling rate.
    generate_s : float
        Wall time of the reads.
    """
    with VirtualSleeper(seed=seed, hours=hours, sfreq=sfreq, artifacts=artifacts) as sl:
        n = sl.info.n_samples
        picks = [sl.info.ch_names.index(c) for c in channels]
        block = round(block_s * sl.info.sfreq)
        data = np.empty((len(picks), n))
        data.fill(0.0)
        t0 = time.perf_counter()
        for a in range(0, n, block):
            data[:, a : a + block] = sl.read(a, a + block)[picks]
        generate_s = time.perf_counter() - t0
        logger.info("generated %.1f h in %.3f s", n / sl.info.sfreq / 3600, generate_s)
        return data, list(channels), sl.hypnogram, sl.info.sfreq, generate_s


def yasa_stage(data: np.ndarray, ch_names: list[str], sfreq: float) -> list[str]:
    """Stage a night with YASA (C4-M1 / E1-M2 / Chin), after the ADC's view of it.

    NaN (lead-off) becomes 0 and values are clipped to the ADC range, as the front-end
    would deliver them. The three channels are resampled to 100 Hz (polyphase) first.
    """
    import mne
    import yasa
    from scipy.signal import resample_poly

    picks = [ch_names.index(c) for c in ("C4-M1", "E1-M2", "Chin")]
    x = np.nan_to_num(data[picks], nan=0.0)
    np.clip(x, -ADC_RANGE_V, ADC_RANGE_V, out=x)
    sf = float(sfreq)
    if sf != 100.0:
        from fractions import Fraction

        frac = Fraction(100.0 / sf).limit_denominator(1000)
        x = resample_poly(x, frac.numerator, frac.denominator, axis=1)
        sf = 100.0
    info = mne.create_info(["C4-M1", "E1-M2", "Chin"], sf, ["eeg", "eog", "emg"])
    raw = mne.io.RawArray(x, info, verbose=False)
    sls = yasa.SleepStaging(raw, eeg_name="C4-M1", eog_name="E1-M2", emg_name="Chin")
    pred = sls.predict()
    labels = np.asarray(getattr(pred, "hypno", pred)).astype(str)
    mapping = {"WAKE": "W", "REM": "R"}
    return [mapping.get(s, s) for s in labels]


def score(truth: list[str], pred: list[str]) -> dict:
    """Accuracy, Cohen's kappa and confusion (``confusion[true][pred]``) over epochs."""
    n = min(len(truth), len(pred))
    t, p = np.asarray(truth[:n]), np.asarray(pred[:n])
    conf = {a: {b: int(np.sum((t == a) & (p == b))) for b in STAGES} for a in STAGES}
    acc = float(np.mean(t == p)) if n else float("nan")
    po = acc
    pe = sum(np.mean(t == s) * np.mean(p == s) for s in STAGES)
    kappa = float((po - pe) / (1 - pe)) if pe < 1 else float("nan")
    return {"yasa_accuracy": round(acc, 4), "yasa_kappa": round(kappa, 4), "confusion": conf}


def evaluate(seed: int, hours: float, *, artifacts: bool = True, sfreq: float = 250.0) -> dict:
    """Generate, stage with YASA and score one night (see the module docstring)."""
    data, names, hyp, sf, gen_s = generate_night(seed, hours, sfreq=sfreq, artifacts=artifacts)
    pred = yasa_stage(data, names, sf)
    out = {"hours": hours, "seed": seed}
    out.update(score(hyp, pred))
    out["generate_s"] = round(gen_s, 3)
    return out


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: print the result as the last line (JSON)."""
    ap = argparse.ArgumentParser(prog="python -m bench.realism", description=__doc__.split("\n")[0])
    ap.add_argument("--hours", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sfreq", type=float, default=250.0)
    ap.add_argument("--no-artifacts", action="store_true", help="generate without artifacts")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    res = evaluate(args.seed, args.hours, artifacts=not args.no_artifacts, sfreq=args.sfreq)
    print(json_line(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
