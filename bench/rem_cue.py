"""What does ``rem-cue`` do over a REM period of the virtual sleeper?

Runs the ``rem-cue`` program on :data:`HYPNOGRAM` (enough NREM for the online stager's
REM-latency gate, then 15 min of REM) for K seeds and counts the cues, the trains, the
world's responses (``cue_incorporated``, ``lucid_signal``, arousals caused by a
stimulus) and the safety island's trips; the delay from the true REM onset to the REM
detector's ``rem_onset`` state event and to the first cue.

The sleeper's responses to cues are modelling assumptions (docstring of
:meth:`sim.sleeper.VirtualSleeper.stimulate`, 6): this bench checks the loop closes.

Usage::

    python -m bench.rem_cue --seeds 6

Prints one line per seed, then, as its last line, one JSON object::

    {"seeds": [...], "cues": n, "trains": n, "outside_rem": n, "incorporated": n,
     "lucid": n, "stimulus_arousals": n, "trips": n,
     "rem_onset_delay_s": [...], "first_cue_delay_s": [...], "run_s": ...}
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from bench._seeds import seeds_main
from sim.runner import RunConfig, run_night

logger = logging.getLogger(__name__)

#: NREM for the stager's REM-latency gate, 15 min of REM, a little N2.
HYPNOGRAM = ["W"] * 4 + ["N1"] * 2 + ["N2"] * 10 + ["N3"] * 14 + ["N2"] * 8 + ["R"] * 30
HYPNOGRAM += ["N2"] * 4


def compare(seeds: list[int]) -> dict:
    """Run ``rem-cue`` on each seed; return the summary (the JSON line)."""
    t0 = time.perf_counter()
    rem0 = HYPNOGRAM.index("R") * 30.0
    rem1 = (len(HYPNOGRAM) - HYPNOGRAM[::-1].index("R")) * 30.0
    out = {k: 0 for k in ("cues", "trains", "outside_rem", "incorporated", "lucid")}
    out |= {"stimulus_arousals": 0, "trips": 0}
    onset_delay: list[float | None] = []
    cue_delay: list[float | None] = []
    with tempfile.TemporaryDirectory() as tmp:
        hyp = Path(tmp) / "rem-hypnogram.txt"
        hyp.write_text("\n".join(HYPNOGRAM) + "\n", encoding="utf-8")
        source = f"sleeper://?hypnogram={hyp}&artifacts=0&nightmares=0"
        for seed in seeds:
            res = run_night(RunConfig(source=source, seed=seed, program="rem-cue", record=False))
            cues = [e for e in res.events if e["kind"] == "stim" and e["delivered"]]
            world = [e for e in res.events if e["kind"] == "world"]
            out["cues"] += len(cues)
            out["trains"] += len({e["train"] for e in cues})
            out["outside_rem"] += sum(not rem0 <= e["t"] < rem1 for e in cues)
            out["incorporated"] += sum(e.get("event") == "cue_incorporated" for e in world)
            out["lucid"] += sum(e.get("event") == "lucid_signal" for e in world)
            out["stimulus_arousals"] += sum(
                e.get("event") == "arousal" and e.get("cause") == "stimulus" for e in world
            )
            out["trips"] += sum(
                e["kind"] == "safety" and e.get("event") == "trip" for e in res.events
            )
            onsets = [
                e["t"] for e in res.events if e["kind"] == "state" and e["event"] == "rem_onset"
            ]
            first_on = next((t for t in onsets if t >= rem0 - 30.0), None)
            onset_delay.append(None if first_on is None else round(first_on - rem0, 1))
            cue_delay.append(round(cues[0]["t"] - rem0, 1) if cues else None)
            print(
                f"seed {seed}: {len(cues)} cues, REM detected after {onset_delay[-1]} s, "
                f"first cue after {cue_delay[-1]} s"
            )
    return {
        "seeds": seeds,
        **out,
        "rem_onset_delay_s": onset_delay,
        "first_cue_delay_s": cue_delay,
        "run_s": round(time.perf_counter() - t0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``python -m bench.rem_cue``)."""
    return seeds_main(__doc__, compare, argv, prog="python -m bench.rem_cue")


if __name__ == "__main__":
    raise SystemExit(main())
