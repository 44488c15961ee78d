"""Does ``onset`` shorten the time to fall asleep on the virtual sleeper?

Runs the same virtual nights twice: with the ``onset`` program (soft pulses locked to the
alpha phase while the sleeper is awake or drowsy, stopping at the first N2) and with its
sham (the same decisions logged, nothing played). Each night is :data:`HYPNOGRAM`: 15 min
awake in bed, 3 min of N1, then N2 (a planned sleep latency of 18 min). The latency is
the time of the sleeper's first N2 (its ``stage`` world events: the truth, not the
stager's view). The phase error of each delivered pulse is the sleeper's own alpha phase
at the pulse (zero-phase 8-12 Hz, Hilbert; 0 = positive peak), computed on the sham
night's samples, which are those the pulse met.

The sleeper's response to the pulses is a modelling assumption (docstring of
:meth:`sim.sleeper.VirtualSleeper.stimulate`, 5), motivated by Elemind's reported
10.5-min shorter latency; this bench checks the loop closes, not that the device works.

Usage::

    python -m bench.onset --seeds 6

Prints one line per seed, then, as its last line, one JSON object::

    {"seeds": [...], "latency_s": {"onset": [...], "sham": [...]}, "mean_shorter_s": ...,
     "pulses": n, "phase": {"mean_deg": ..., "R": ...}, "after_stager_n2": n,
     "in_stager_sleep_epochs": n, "trips": n, "run_s": ...}

``after_stager_n2`` counts pulses decided after the stager's first N2 decision (must be
0); ``in_stager_sleep_epochs`` those that fell in an epoch the stager called N2/N3/R once
it knew (it decides one epoch late, so the last pulses before the stop can).
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._seeds import seeds_main
from sim.runner import RunConfig, RunResult, run_night
from sim.sleeper import VirtualSleeper

logger = logging.getLogger(__name__)

#: 15 min awake, 3 min N1, then 15 min of N2.
HYPNOGRAM = ["W"] * 30 + ["N1"] * 6 + ["N2"] * 30


def write_inputs(folder: Path) -> tuple[Path, Path]:
    """Write the hypnogram and the sham program into ``folder``; return their paths."""
    hyp = folder / "onset-hypnogram.txt"
    hyp.write_text("\n".join(HYPNOGRAM) + "\n", encoding="utf-8")
    text = (Path(__file__).parents[1] / "firmware" / "programs" / "onset.toml").read_text(
        encoding="utf-8"
    )
    sham = folder / "onset-sham.toml"
    sham.write_text(
        text.replace('name = "onset"', 'name = "onset-sham"\nsham = true'), encoding="utf-8"
    )
    return hyp, sham


def latency_s(result: RunResult) -> float:
    """Time of the sleeper's first N2 (seconds from the night's start)."""
    return min(
        e["t"]
        for e in result.events
        if e["kind"] == "world" and e.get("event") == "stage" and e["stage"] == "N2"
    )


def compare(seeds: list[int]) -> dict:
    """Run ``onset`` and its sham on each seed; return the summary (the JSON line)."""
    t0 = time.perf_counter()
    lat: dict[str, list[float]] = {"onset": [], "sham": []}
    phases: list[float] = []
    pulses = after_n2 = in_sleep = trips = 0
    with tempfile.TemporaryDirectory() as tmp:
        hyp, sham = write_inputs(Path(tmp))
        source = f"sleeper://?hypnogram={hyp}&artifacts=0"
        for seed in seeds:
            runs = {
                name: run_night(RunConfig(source=source, seed=seed, program=prog, record=False))
                for name, prog in (("onset", "onset"), ("sham", str(sham)))
            }
            for name, res in runs.items():
                lat[name].append(latency_s(res))
            res = runs["onset"]
            delivered = [e for e in res.events if e["kind"] == "stim" and e["delivered"]]
            pulses += len(delivered)
            first_n2 = min(
                (e["t"] for e in res.events if e["kind"] == "stage" and e["stage"] == "N2"),
                default=np.inf,
            )
            after_n2 += sum(e["decided_t"] > first_n2 for e in delivered)
            # Decided before the stager's N2 was known, yet inside an epoch it called
            # N2/N3/R once it knew (the stager decides one epoch late).
            asleep = [t for t, s in res.hypnogram if s in ("N2", "N3", "R")]
            in_sleep += sum(any(t <= e["t"] < t + 30.0 for t in asleep) for e in delivered)
            trips += sum(e["kind"] == "safety" and e.get("event") == "trip" for e in res.events)
            # The sham night's samples are those each pulse met (nothing before a pulse
            # changes), so the sleeper's own alpha phase is read there.
            truth = VirtualSleeper(seed, hypnogram=HYPNOGRAM, artifacts=False)
            sf = truth.sfreq
            phases += [truth.alpha_phase(round(e["t"] * sf))[0] for e in delivered]
            print(
                f"seed {seed}: latency {lat['onset'][-1] / 60:.1f} min with onset, "
                f"{lat['sham'][-1] / 60:.1f} min sham, {len(delivered)} pulses"
            )
    z = np.exp(1j * np.array(phases)).mean() if phases else 0j
    shorter = np.array(lat["sham"]) - np.array(lat["onset"])
    return {
        "seeds": seeds,
        "latency_s": lat,
        "mean_shorter_s": round(float(shorter.mean()), 1),
        "pulses": pulses,
        "phase": {"mean_deg": round(float(np.degrees(np.angle(z))), 1), "R": round(abs(z), 3)},
        "after_stager_n2": int(after_n2),
        "in_stager_sleep_epochs": int(in_sleep),
        "trips": int(trips),
        "run_s": round(time.perf_counter() - t0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``python -m bench.onset``)."""
    return seeds_main(__doc__, compare, argv, prog="python -m bench.onset")


if __name__ == "__main__":
    raise SystemExit(main())
