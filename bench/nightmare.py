"""Does nightmare-guard shorten nightmares without waking the sleeper?

Runs the same virtual nights twice: with the ``nightmare-guard`` program, and with its sham
(the same decisions logged, nothing played: the nightmares run their planned course). Each
night is :data:`HYPNOGRAM` -- enough N2/N3 for the online stager's REM-latency gate
(15 min), then a 20-min REM period -- with ``nightmares`` episodes planted in its REM
(``sleeper://?nightmares=N``). An episode lasts from the sleeper's ``nightmare`` world
event to its ``nightmare_end`` (cause ``plan``, ``haptic`` or ``awakening``); it counts as
woken when a stimulus woke the sleeper (a ``stage`` W world event with cause
``stimulus``) between its start and 30 s after its end.

Usage::

    python -m bench.nightmare --seeds 10 --plot nightmare.png

Prints a table per episode, then, as its last line, one JSON object::

    {"seeds": [...], "episodes": n, "mean_duration_s": {"guard": ..., "sham": ...},
     "median_duration_s": {...}, "shorter": n, "woken": n, "share_woken": ...,
     "ended_by": {"haptic": n, ...}, "pulses": n, "trips": {"guard": {...}, "sham": {...}},
     "run_s": ...}

``trips`` counts the safety island's trips by cause (``trapped sleeper`` is the
documented last resort: distress lasting 30 s with stimulation in it).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench._json import json_line
from sim.runner import RunConfig, RunResult, run_night

logger = logging.getLogger(__name__)

#: The test night (30-s epochs): wake, sleep onset, 32 epochs of N2/N3, 40 of REM.
HYPNOGRAM = ["W"] * 4 + ["N1"] * 2 + ["N2"] * 10 + ["N3"] * 14 + ["N2"] * 8 + ["R"] * 40
#: After an episode's end, an awakening this soon is still counted as caused by it.
WOKEN_WINDOW_S = 30.0

_SHAM = """\
# nightmare-guard's sham: its decisions logged with delivered=false, nothing played.
name = "nightmare-guard-sham"
description = "nightmare-guard decisions logged, nothing played"
sham = true
"""


@dataclass
class Episode:
    """One nightmare as the world reported it."""

    seed: int
    start: float
    duration: float
    cause: str
    woken: bool
    pulses: int


def write_inputs(folder: Path) -> tuple[Path, Path]:
    """Write the hypnogram and the sham program into ``folder``; return their paths."""
    from importlib import resources

    hyp = folder / "nightmare-night.csv"
    hyp.write_text("\n".join(HYPNOGRAM) + "\n", encoding="utf-8")
    guard = (resources.files("firmware") / "programs" / "nightmare-guard.toml").read_text(
        encoding="utf-8"
    )
    # The sham keeps every table of the real program and only adds sham = true.
    body = "\n".join(
        line for line in guard.splitlines() if not line.startswith(("name", "description"))
    )
    sham = folder / "nightmare-guard-sham.toml"
    sham.write_text(_SHAM + body + "\n", encoding="utf-8")
    return hyp, sham


def episodes(result: RunResult, seed: int) -> list[Episode]:
    """The nightmares of one night, with how they ended and whether a stimulus woke.

    Parameters
    ----------
    result : RunResult
        The night (its world, stimulus and safety events).
    seed : int
        Its seed, for the record.

    Returns
    -------
    list of Episode
        In time order.
    """
    ev = result.events
    starts = [e for e in ev if e["kind"] == "world" and e["event"] == "nightmare"]
    ends = [e for e in ev if e["kind"] == "world" and e["event"] == "nightmare_end"]
    wakes = [
        e["t"]
        for e in ev
        if e["kind"] == "world"
        and e["event"] == "stage"
        and e["stage"] == "W"
        and e.get("cause") == "stimulus"
    ]
    pulses = [e["t"] for e in ev if e["kind"] == "stim" and e["delivered"]]
    out = []
    for s in starts:
        end = next(e for e in ends if e["t"] >= s["t"])
        t0, t1 = s["t"], end["t"]
        out.append(
            Episode(
                seed,
                t0,
                round(t1 - t0, 3),
                end["cause"],
                any(t0 <= w <= t1 + WOKEN_WINDOW_S for w in wakes),
                sum(1 for p in pulses if t0 <= p <= t1 + WOKEN_WINDOW_S),
            )
        )
    return out


def trips_by_cause(result: RunResult) -> dict[str, int]:
    """The island's trips of one night by cause."""
    out: dict[str, int] = {}
    for e in result.events:
        if e["kind"] == "safety" and e["event"] == "trip":
            out[e["cause"]] = out.get(e["cause"], 0) + 1
    return out


def run_pair(
    seed: int, hypnogram: Path, sham: Path, nightmares: int = 3, record: bool = False
) -> tuple[RunResult, RunResult]:
    """One night with nightmare-guard and the same night with its sham.

    Parameters
    ----------
    seed : int
        Seed of the night (the sleeper and the ADC).
    hypnogram, sham : Path
        Files written by :func:`write_inputs`.
    nightmares : int
        Nightmares planted in the night's REM.
    record : bool
        Keep the guard night's samples (for the figure).

    Returns
    -------
    tuple of RunResult
        The guard night, then the sham night.
    """
    source = f"sleeper://?hypnogram={hypnogram}&nightmares={nightmares}"
    guard = run_night(RunConfig(source=source, seed=seed, program="nightmare-guard", record=record))
    control = run_night(RunConfig(source=source, seed=seed, program=str(sham), record=False))
    return guard, control


def compare(seeds: list[int], nightmares: int = 3, plot: Path | None = None) -> dict:
    """Run every seed with the guard and with its sham; summarise the episodes.

    Parameters
    ----------
    seeds : list of int
        Seeds of the nights (one night per seed and arm).
    nightmares : int
        Nightmares planted per night.
    plot : Path or None
        Where to write the figure (None: no figure).

    Returns
    -------
    dict
        The summary printed as the JSON line (plus ``table``: one row per episode).
    """
    t0 = time.perf_counter()
    rows: list[dict] = []
    trips: dict[str, dict[str, int]] = {"guard": {}, "sham": {}}
    example: tuple[RunResult, Episode] | None = None
    with tempfile.TemporaryDirectory() as tmp:
        hyp, sham = write_inputs(Path(tmp))
        for seed in seeds:
            guard, control = run_pair(seed, hyp, sham, nightmares, record=plot is not None)
            for arm, res in (("guard", guard), ("sham", control)):
                for cause, n in trips_by_cause(res).items():
                    trips[arm][cause] = trips[arm].get(cause, 0) + n
            g_eps, s_eps = episodes(guard, seed), episodes(control, seed)
            for g, s in zip(g_eps, s_eps, strict=True):
                rows.append(
                    {
                        "seed": seed,
                        "start_s": g.start,
                        "guard_s": g.duration,
                        "sham_s": s.duration,
                        "ended_by": g.cause,
                        "woken": g.woken,
                        "pulses": g.pulses,
                    }
                )
                if example is None and g.cause == "haptic" and g.pulses >= 2 and plot:
                    example = (guard, g)
    if not rows:
        raise RuntimeError("no nightmare in these nights")
    g = np.array([r["guard_s"] for r in rows])
    s = np.array([r["sham_s"] for r in rows])
    ended: dict[str, int] = {}
    for r in rows:
        ended[r["ended_by"]] = ended.get(r["ended_by"], 0) + 1
    woken = sum(r["woken"] for r in rows)
    summary = {
        "seeds": list(seeds),
        "nightmares_per_night": nightmares,
        "episodes": len(rows),
        "mean_duration_s": {"guard": round(float(g.mean()), 1), "sham": round(float(s.mean()), 1)},
        "median_duration_s": {
            "guard": round(float(np.median(g)), 1),
            "sham": round(float(np.median(s)), 1),
        },
        "shorter": int(np.sum(g < s)),
        "woken": int(woken),
        "share_woken": round(woken / len(rows), 3),
        "ended_by": dict(sorted(ended.items())),
        "pulses": int(sum(r["pulses"] for r in rows)),
        "trips": trips,
        "run_s": round(time.perf_counter() - t0, 1),
        "table": rows,
    }
    if plot is not None:
        write_figure(plot, rows, example)
    return summary


def _heart_rate(ecg: np.ndarray, sfreq: float, t0: float) -> tuple[np.ndarray, np.ndarray]:
    """Beat times (s) and instantaneous heart rate (bpm) from an ECG stretch in µV."""
    from scipy.signal import find_peaks

    peaks, _ = find_peaks(ecg, height=0.5 * np.nanmax(ecg), distance=int(0.33 * sfreq))
    t = t0 + peaks / sfreq
    return t[1:], 60.0 / np.diff(t)


def write_figure(path: Path, rows: list[dict], example: tuple[RunResult, Episode] | None) -> None:
    """Per-episode durations with and without the guard, and one episode in detail."""
    import matplotlib

    matplotlib.use("Agg")  # headless: figures are files
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [1, 1.6]})
    ax = axes[0]
    for r in rows:
        color = "tab:red" if r["woken"] else "tab:blue"
        ax.plot([0, 1], [r["sham_s"], r["guard_s"]], color=color, alpha=0.5, marker="o")
    ax.set_xticks([0, 1], ["sham (no pulse)", "nightmare-guard"])
    ax.set_ylabel("nightmare duration (s)")
    ax.set_xlim(-0.3, 1.3)
    ax.set_title(f"{len(rows)} episodes (red: a pulse woke the sleeper)")
    ax = axes[1]
    if example is not None:
        res, ep = example
        sf = res.sfreq
        lo, hi = ep.start - 40.0, ep.start + max(ep.duration, 30.0) + 60.0
        ecg_row = res.ch_roles.index("ecg")
        assert res.recorded is not None
        a, b = int(lo * sf), min(int(hi * sf), res.recorded.shape[1])
        bt, hr = _heart_rate(res.recorded[ecg_row, a:b].astype(float), sf, a / sf)
        ax.plot(bt, hr, color="black", lw=1, label="heart rate (ECG R peaks)")
        ax.axvspan(ep.start, ep.start + ep.duration, color="tab:orange", alpha=0.15)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("heart rate (bpm)")
        ax2 = ax.twinx()
        stims = [e for e in res.events if e["kind"] == "stim" and lo <= e["t"] <= hi]
        for e in stims:
            ax2.vlines(e["t"], 0, e["level"], color="tab:purple" if e["delivered"] else "grey")
        ax2.plot([], [], color="tab:purple", label="haptic pulse (drive %)")
        ax2.legend(loc="upper left", fontsize=8)
        ax2.set_ylim(0, 100)
        ax2.set_ylabel("haptic drive (%)")
        stages = [(t, s) for t, s in res.hypnogram if lo - 30 <= t <= hi]
        label = " ".join(f"{s}" for _, s in stages)
        ax.set_title(
            f"seed {ep.seed}: nightmare (shaded) {ep.duration:.0f} s, ended: {ep.cause}; "
            f"online stages {label}",
            fontsize=9,
        )
        ax.legend(loc="upper right", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no interrupted episode to show", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    logger.info("figure written to %s", path)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: a table, then the summary as the last line (JSON)."""
    ap = argparse.ArgumentParser(
        prog="python -m bench.nightmare", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--seeds", type=int, default=10, help="nights per arm (seeds 1..K)")
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--nightmares", type=int, default=3, help="nightmares planted per night")
    ap.add_argument("--plot", type=Path, default=None, help="write the figure here (PNG)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    res = compare(seeds, args.nightmares, args.plot)
    print(
        f"{'seed':>4} {'start_s':>8} {'sham_s':>7} {'guard_s':>7} {'ended_by':>10} "
        f"{'pulses':>6} woken"
    )
    for r in res.pop("table"):
        print(
            f"{r['seed']:>4} {r['start_s']:>8.1f} {r['sham_s']:>7.1f} {r['guard_s']:>7.1f} "
            f"{r['ended_by']:>10} {r['pulses']:>6} {'yes' if r['woken'] else 'no'}"
        )
    print(json_line(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
