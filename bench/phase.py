"""Phase-targeting accuracy of the causal estimators on real EEG.

Ground truth (DESIGN, "How accuracy is measured"): offline, zero-phase Butterworth order 2,
0.5-2 Hz (``sosfiltfilt``), Hilbert; 0° = slow-oscillation positive peak. Each estimator
runs causally over the recording resampled to the device rate (250 Hz); its candidates go
through an emulation of the application's gating, and the phase of the ground truth is read
at the delivered onsets at the transducer (``target_index``).

Gating emulated here (the application does it on the device; the estimators do not):

* stage: the 30-s epoch holding the decision is N2 or N3 by the EXPERT hypnogram (an
  oracle; the device uses its online stager, which is one epoch late and makes errors);
* bad signal: a DMA block with ``|x| > 500 µV``, or with a sample without a value (NaN,
  where the recording has a gap: the ADC flags it lead-off and delivers 0, which is what
  the estimators are fed), withholds stimulation until 5 s after it;
* refractory: 2.5 s from the previous onset;
* timing: the timer (onset minus the 15-ms audio latency) must lie after the end of the
  decision's DMA block, as in ``firmware.app``.

Gaps: a recording may hold NaN where it has no value (:mod:`hal.recording` returns them
so). The referee interpolates across a gap, has no phase in it nor within
:data:`REFEREE_MARGIN_S` of it, and onsets whose target falls there are left out of the
phase statistics (``mean_deg``, ``R``, ``within_90``) and counted as ``n_excluded``; ``n``
and the rates count every delivered onset, ``gap_s`` is the time without a value.

Usage::

    python -m bench.phase --dreams ../shared/data/dreams
    python -m bench.phase --recording night.edf --channel C3-A1 [--hypnogram FILE]

Prints a table and, as its last line, one JSON object with the metrics per recording and
pooled, per estimator.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy import signal

from bench._json import json_line
from firmware.phase import Candidate, make_estimator
from hal.recording import missing_after_resampling
from sim import analysis

FS = 250.0
BLOCK = 8
LATENCY_S = 0.015
REFRACTORY_S = 2.5
BAD_UV = 500.0
BAD_HOLDOFF_S = 5.0
#: No referee phase this close to a gap (seconds). The zero-phase filter and the Hilbert
#: transform carry the interpolated stretch into its neighbours: on DREAMS, gaps of 0.2-30 s
#: moved the phase by 10-50° (median) at their edges, under 1° in 9 cases of 10 at 3 s.
REFEREE_MARGIN_S = 3.0
#: DREAMS excerpts: rates from the database README (the text files do not carry them).
DREAMS_RATES = {"excerpt1": 100.0, "excerpt3": 50.0, "excerpt4": 200.0}
DREAMS_EXCERPTS = ("excerpt1", "excerpt3", "excerpt4")
#: R&K codes of the DREAMS hypnograms -> AASM stage names.
RK_TO_AASM = {5: "W", 4: "R", 3: "N1", 2: "N2", 1: "N3", 0: "N3", -1: "W", -2: "?", -3: "?"}
SLEEP_GATE = ("N2", "N3")


# --- metrics ------------------------------------------------------------------------------


# The referee's definitions live in sim.analysis (the run summary and report use them too).
circular_mean_deg = analysis.circular_mean_deg
resultant_length = analysis.resultant_length
ground_truth_phase = analysis.ground_truth_phase


def fill_gaps(x: np.ndarray) -> np.ndarray:
    """A copy of ``x`` with its non-finite samples linearly interpolated.

    Interpolation (not zeros) keeps filters from ringing off a step into the samples
    next to a gap; before the first and after the last finite sample the edge value holds.
    The input must hold at least one finite sample.
    """
    bad = ~np.isfinite(x)
    out = np.array(x, dtype=np.float64)
    if bad.any():
        idx = np.arange(x.size)
        out[bad] = np.interp(idx[bad], idx[~bad], out[~bad])
    return out


def near_gap(bad: np.ndarray, margin: int) -> np.ndarray:
    """Per sample: ``bad``, or within ``margin`` samples of a ``bad`` sample."""
    count = np.concatenate(([0], np.cumsum(bad)))
    idx = np.arange(bad.size)
    lo = np.maximum(idx - margin, 0)
    hi = np.minimum(idx + margin + 1, bad.size)
    return count[hi] - count[lo] > 0


def referee_phase(x_uv: np.ndarray, sfreq: float, margin_s: float = REFEREE_MARGIN_S) -> np.ndarray:
    """:func:`ground_truth_phase` of a recording that may hold gaps (NaN).

    Parameters
    ----------
    x_uv : ndarray, shape (n,)
        EEG in µV, NaN (or Inf) where it has no value.
    sfreq : float
        Sampling rate in Hz.
    margin_s : float
        How far from a gap the phase is still undefined.

    Returns
    -------
    ndarray of float64, shape (n,)
        Phase in degrees (0 = positive peak); NaN in a gap and within ``margin_s`` of it.
        Without a gap, exactly :func:`ground_truth_phase`.
    """
    bad = ~np.isfinite(x_uv)
    if not bad.any():
        return ground_truth_phase(x_uv, sfreq)
    if bad.all():
        return np.full(x_uv.size, np.nan)
    # The filter and the FFT would carry one NaN over the whole signal: fill, then forget.
    phase = ground_truth_phase(fill_gaps(x_uv), sfreq)
    phase[near_gap(bad, round(margin_s * sfreq))] = np.nan
    return phase


def phase_row(phases: np.ndarray, n_sleep: int, minutes: float) -> dict:
    """Metrics of delivered onsets from their referee phases (NaN: no referee there).

    Parameters
    ----------
    phases : ndarray
        Referee phase (degrees) at each delivered onset, NaN where the referee has none.
    n_sleep : int
        How many of the onsets fell in N2/N3 by the expert hypnogram.
    minutes : float
        Minutes of N2/N3 by the expert hypnogram.

    Returns
    -------
    dict
        ``n`` onsets, ``n_excluded`` of them without a referee phase; ``mean_deg``, ``R``
        and ``within_90`` over the others; the rates over all ``n``.
    """
    n = int(phases.size)
    ph = phases[np.isfinite(phases)]
    return {
        "n": n,
        "n_excluded": n - int(ph.size),
        "mean_deg": round(circular_mean_deg(ph), 1),
        "R": round(resultant_length(ph), 3),
        "within_90": round(float(np.mean(np.abs(ph) < 90)), 3) if ph.size else float("nan"),
        "per_min_n2n3": round(float(n_sleep / minutes), 2) if minutes else float("nan"),
        "outside_n2n3": round(float(1 - n_sleep / n), 3) if n else float("nan"),
        "n2n3_min": round(float(minutes), 1),
    }


# --- data ---------------------------------------------------------------------------------


@dataclass
class Recording:
    """One EEG channel at the device rate with its expert stages."""

    name: str
    x_uv: np.ndarray
    stages: np.ndarray  # one AASM stage name per scored segment
    stage_len_s: float  # length of a scored segment (DREAMS: 5 s)


def _resample(x: np.ndarray, sfreq: float) -> np.ndarray:
    """``x`` at :data:`FS`; a sample next to a gap (NaN) in the input is NaN."""
    if sfreq == FS:
        return x
    frac = Fraction(FS / sfreq).limit_denominator(1000)
    up, down = frac.numerator, frac.denominator
    bad = ~np.isfinite(x)
    if not bad.any():
        return signal.resample_poly(x, up, down)
    if bad.all():
        return np.full(-(-x.size * up // down), np.nan)
    # Fill so the filter does not spread NaN, then mark again the output samples whose
    # input neighbours had no value (as the simulator's loader does).
    out = signal.resample_poly(fill_gaps(x), up, down)
    out[missing_after_resampling(bad, out.size, up, down)] = np.nan
    return out


def _read_dreams_txt(path: Path) -> np.ndarray:
    lines = path.read_text(encoding="utf-8").split("\n")
    return np.array([float(v) for v in lines[1:] if v.strip()])


def _read_hypnogram(path: Path) -> tuple[np.ndarray, float]:
    text = path.read_text(encoding="utf-8").strip().splitlines()
    if text[0].startswith("epoch_start_s"):  # our hypnogram.csv (30-s epochs)
        rows = [line.split(",") for line in text[1:]]
        starts = np.array([float(r[0]) for r in rows])
        step = float(np.median(np.diff(starts))) if len(starts) > 1 else 30.0
        return np.array([r[1].strip() for r in rows]), step
    codes = [int(v) for v in text[1:]]  # DREAMS: a header line, one R&K code per 5 s
    unknown = sorted(set(codes) - set(RK_TO_AASM))
    if unknown or not codes:
        raise ValueError(f"{path}: not a DREAMS hypnogram (R&K codes 5 to -3 after a header)")
    return np.array([RK_TO_AASM[c] for c in codes]), 5.0


def load_dreams(folder: Path, name: str) -> Recording:
    """Load a DREAMS excerpt (text file) resampled to 250 Hz, with its expert stages."""
    x = _read_dreams_txt(folder / f"{name}.txt")
    stages, step = _read_hypnogram(folder / f"Hypnogram_{name}.txt")
    return Recording(name, _resample(x, DREAMS_RATES[name]), stages, step)


def load_recording(
    path: Path, channel: str | None, hypnogram: Path | None, sfreq: float | None
) -> Recording:
    """Load one EEG channel of any recording MNE reads (or a DREAMS text file) at 250 Hz.

    A recording is loaded as the simulator loads it (:class:`hal.recording.RecordingSource`:
    the same units, EDF headers that write ``UV`` included, and the same resampling to the
    device rate), at whatever rate it was recorded. A ``.txt`` file is a DREAMS excerpt:
    one value in µV per line, at ``sfreq`` or the rate the database gives for it.
    """
    if path.suffix == ".txt":
        x = _read_dreams_txt(path)
        rate = sfreq or DREAMS_RATES.get(path.stem)
        if rate is None:
            raise SystemExit(f"{path}: a text recording needs --sfreq.")
        x_uv = _resample(x, rate)
    else:
        from hal.base import UserInputError
        from hal.recording import RecordingSource

        try:
            # min_sfreq=0: the phase of 0.5-2 Hz waves needs no high recording rate.
            source = RecordingSource.from_path(
                path, channel=channel, eog=False, emg=False, ecg=False, sfreq=FS, min_sfreq=0
            )
        except UserInputError as err:
            raise SystemExit(f"bench.phase: error: {err}") from None
        with source:
            x_uv = source.read(0, source.info.n_samples)[0] * 1e6
    if hypnogram is None:
        # No stages: every segment counts as N2/N3 (the stage gate and its metrics are void).
        step = 30.0
        stages = np.array(["N2"] * math.ceil(x_uv.size / FS / step))
    else:
        stages, step = _read_hypnogram(hypnogram)
    return Recording(path.stem, x_uv, stages, step)


# --- the run --------------------------------------------------------------------------------


def _epoch_gate(rec: Recording, n: int) -> np.ndarray:
    """Per-sample bool: the 30-s epoch is N2/N3 by majority of its scored segments."""
    per_epoch = max(1, round(30.0 / rec.stage_len_s))
    n_ep = math.ceil(len(rec.stages) / per_epoch)
    ok = np.zeros(n_ep, dtype=bool)
    for k in range(n_ep):
        seg = rec.stages[k * per_epoch : (k + 1) * per_epoch]
        ok[k] = np.isin(seg, SLEEP_GATE).sum() * 2 > len(seg)
    idx = np.minimum(np.arange(n) // int(30 * FS), n_ep - 1)
    return ok[idx]


def gate(cands: list[Candidate], x_uv: np.ndarray, sleep_ok: np.ndarray) -> list[Candidate]:
    """Emulate the application's gating (stage, bad signal, refractory, timer in time)."""
    n = x_uv.size
    n_blocks = n // BLOCK
    head = x_uv[: n_blocks * BLOCK]
    # A sample without a value is lead-off to the ADC: its block is bad like a loud one.
    bad_sample = ~np.isfinite(head) | (np.abs(np.nan_to_num(head)) > BAD_UV)
    bad_block = bad_sample.reshape(n_blocks, BLOCK).any(1)
    bad_end = (np.flatnonzero(bad_block) + 1) * BLOCK  # first sample after a bad block
    holdoff = round(BAD_HOLDOFF_S * FS)
    latency = LATENCY_S * FS
    out: list[Candidate] = []
    last = -(10**12)
    for c in cands:
        d, t = c.decision_index, c.target_index
        if t >= n or not sleep_ok[d]:
            continue
        j = np.searchsorted(bad_end, d // BLOCK * BLOCK + BLOCK, side="right") - 1
        if j >= 0 and d < bad_end[j] + holdoff:
            continue
        if t - last < REFRACTORY_S * FS:
            continue
        if t - latency <= (d // BLOCK + 1) * BLOCK:
            continue
        last = t
        out.append(c)
    return out


def metrics(targets: np.ndarray, truth_deg: np.ndarray, rec: Recording) -> dict:
    """Phase and rate metrics of delivered onsets (sample indices at 250 Hz)."""
    return phase_row(truth_deg[targets], _n_sleep(targets, rec), _n2n3_minutes(rec))


def _n_sleep(targets: np.ndarray, rec: Recording) -> int:
    """How many onsets fall in N2/N3 by the expert hypnogram."""
    seg = np.minimum((targets / FS / rec.stage_len_s).astype(int), len(rec.stages) - 1)
    return int(np.isin(rec.stages[seg], SLEEP_GATE).sum())


def _n2n3_minutes(rec: Recording) -> float:
    """Minutes of N2/N3 by the expert hypnogram."""
    return float(np.isin(rec.stages, SLEEP_GATE).sum() * rec.stage_len_s / 60)


def run_app(rec: Recording, name: str, ngo_threshold: float = -80.0) -> list[int]:
    """Run the whole application firmware over a recording; return the onsets it asks for.

    This is the device's own gating: its online stager (one epoch late, stable N2/N3 for
    two epochs), its signal-quality hold-off, refractory period and timer rule, on the
    samples an ADS1299-like front-end delivers.
    """
    from firmware.app import Application
    from firmware.program import parse_program
    from hal.adc import AdcModel, FrontEnd
    from hal.base import ChannelSpec, SourceInfo
    from hal.recording import RecordingSource

    trigger = {"kind": name, "refractory_s": 2.5}
    if name == "ngo":
        trigger["threshold_uv"] = ngo_threshold
    program = parse_program(
        {
            "name": f"bench-{name}",
            "gate": {"stages": list(SLEEP_GATE), "stable_epochs": 2},
            "trigger": trigger,
        },
        "bench",
    )
    info = SourceInfo(FS, (ChannelSpec("EEG", "eeg"),), rec.x_uv.size, rec.name)
    source = RecordingSource(rec.x_uv[np.newaxis] * 1e-6, info)
    front = FrontEnd(source, AdcModel(), seed=0)
    app = Application(program, info, BLOCK, output_latency_s=0.015)
    onsets: list[int] = []
    idx, n = 0, rec.x_uv.size // BLOCK * BLOCK
    while idx < n:
        stop = app.read_horizon(idx, min(idx + 7504, n))
        data, flags = front.read(idx, stop)
        res = app.process(idx, data, flags)
        onsets += [r.onset_index for r in res.stims]
        idx += res.n_consumed
    return onsets


def run(
    recordings: list[Recording],
    estimators: list[str],
    ngo_threshold: float = -80.0,
    online: bool = False,
) -> dict:
    """Run every estimator over every recording; metrics per recording and pooled.

    With ``online`` the whole firmware runs (its own online stager gates); otherwise the
    estimators' candidates go through the emulated gate with the expert hypnogram.
    """
    gate_name = (
        "online stager of the firmware (causal), the whole application"
        if online
        else "expert hypnogram (oracle), 30-s epochs N2/N3"
    )
    result: dict = {"gate": gate_name, "estimators": {}}
    pooled: dict[str, list] = {e: [] for e in estimators}
    for rec in recordings:
        truth = referee_phase(rec.x_uv, FS)
        gap_s = round(float(np.count_nonzero(~np.isfinite(rec.x_uv)) / FS), 2)
        # What the ADC delivers in a gap (lead-off): 0, flagged; gate() sees the flag as NaN.
        x_adc = np.nan_to_num(rec.x_uv, nan=0.0, posinf=0.0, neginf=0.0)
        sleep_ok = _epoch_gate(rec, rec.x_uv.size)
        for name in estimators:
            kw = {"threshold_uv": ngo_threshold} if name == "ngo" else {}
            est = make_estimator(name, FS, BLOCK, **kw)
            t0 = time.perf_counter()
            if online:
                targets = np.array(run_app(rec, name, ngo_threshold), dtype=int)
            else:
                cands = est.scan(x_adc, 0)
                kept = gate(cands, rec.x_uv, sleep_ok)
                targets = np.array([c.target_index for c in kept], dtype=int)
            dt = time.perf_counter() - t0
            m = metrics(targets, truth, rec)
            m["gap_s"] = gap_s
            m["scan_s_per_hour"] = round(dt / (rec.x_uv.size / FS / 3600), 4)
            result["estimators"].setdefault(name, {})[rec.name] = m
            pooled[name].append((truth[targets], targets, rec))
    for name in estimators:
        rows = pooled[name]
        row = phase_row(
            np.concatenate([p for p, _, _ in rows]),
            sum(_n_sleep(t, rec) for _, t, rec in rows),
            sum(_n2n3_minutes(rec) for _, _, rec in rows),
        )
        row["gap_s"] = round(sum(m["gap_s"] for m in result["estimators"][name].values()), 2)
        result["estimators"][name]["pooled"] = row
    return result


TARGETS = "targets: |mean| <= 10 deg, R >= 0.80, within +-90 >= 0.95, >= 2/min N2/N3, <= 10% out"


def passes(m: dict) -> bool:
    """Whether one row of metrics meets the issue's targets."""
    return bool(
        m["n"] > 0
        and abs(m["mean_deg"]) <= 10
        and m["R"] >= 0.80
        and m["within_90"] >= 0.95
        and m["per_min_n2n3"] >= 2
        and m["outside_n2n3"] <= 0.10
    )


def format_table(result: dict) -> str:
    """The metrics as a fixed-width table, estimators side by side per recording."""
    head = f"{'recording':<10} {'estimator':<6} {'n':>4} {'excl':>4} {'mean°':>7} {'R':>6} "
    head += f"{'±90°':>6} {'/min':>6} {'out':>6} {'ok':>3}"
    lines = [f"stage gate: {result['gate']}; {TARGETS}", head, "-" * len(head)]
    names = list(result["estimators"])
    recs = list(result["estimators"][names[0]])
    for rec in recs:
        for name in names:
            m = result["estimators"][name][rec]
            lines.append(
                f"{rec:<10} {name:<6} {m['n']:>4} {m['n_excluded']:>4} {m['mean_deg']:>7.1f} "
                f"{m['R']:>6.3f} {m['within_90']:>6.3f} {m['per_min_n2n3']:>6.2f} "
                f"{m['outside_n2n3']:>6.3f} "
                f"{'yes' if passes(m) else 'no':>3}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(prog="python -m bench.phase", description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dreams", type=Path, help="folder of the DREAMS excerpts 1, 3, 4")
    src.add_argument("--recording", type=Path, help="a recording MNE reads (or DREAMS .txt)")
    p.add_argument("--channel", help="EEG channel of --recording")
    p.add_argument("--hypnogram", type=Path, help="DREAMS hypnogram or hypnogram.csv")
    p.add_argument("--sfreq", type=float, help="rate of a .txt recording")
    p.add_argument("--estimators", default="echt,pll,ngo")
    p.add_argument("--ngo-threshold", type=float, default=-80.0)
    p.add_argument(
        "--gate",
        choices=("expert", "online"),
        default="online",
        help="stage gate: the firmware's own online stager (default, what the device does) "
        "or the expert hypnogram (an oracle, to judge the estimators alone)",
    )
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    if args.recording and args.channel is None and args.recording.suffix != ".txt":
        p.error("--recording needs --channel")
    try:
        if args.dreams:
            recs = [load_dreams(args.dreams, name) for name in DREAMS_EXCERPTS]
        else:
            recs = [load_recording(args.recording, args.channel, args.hypnogram, args.sfreq)]
    except (OSError, ValueError) as err:
        # A missing file or one that is not what it claims: one line, no traceback.
        raise SystemExit(f"bench.phase: error: {err}") from None
    result = run(recs, args.estimators.split(","), args.ngo_threshold, args.gate == "online")
    result["wall_s"] = round(time.perf_counter() - t0, 2)
    print(format_table(result))
    print(json_line(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
