"""How fast a night simulates, beside YASA's offline staging of a night, in one process.

``python -m bench.speed`` runs, after a short warm-up of each side:

* ``night_s``: an 8-h closed-loop virtual night in-process (EEG, EOG, EMG, ECG and motion
  at 250 Hz from the sleeper, the ADC model, the firmware's filters, quality check,
  trigger and stager, the interlock, the MCU model, events);
* ``yasa_s``: YASA's ``SleepStaging`` of an 8-h 3-channel 100 Hz night (the same virtual
  night, so the comparison is like for like);
* ``replay_s``: the same firmware replaying that 8-h 100 Hz night from a FIF file (load,
  resampling to 250 Hz and the closed loop);
* ``e2e_s``: ``slumbersync simulate --hours 8`` as a user runs it (start-up, outputs and
  report included), in a subprocess;
* the floor under ``e2e_s`` that no speed-up of the night can remove: ``startup_s``, a fresh
  interpreter importing what ``simulate`` needs (MNE, SciPy, SimPy, numba, the firmware),
  and ``fif_save_s``, MNE saving that run's session.fif again (the same channels and
  samples, the same 30-s buffers). ``e2e_floor_ratio`` is their sum over ``yasa_s``.

Its last line is one JSON object. Ratios below 1 mean SlumberSync is faster than YASA.
"""

from __future__ import annotations

import argparse
import logging
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._json import json_line

logger = logging.getLogger("bench.speed")


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux: the process's high-water mark so far.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def virtual_night_raw(hours: float, seed: int, sfreq: float):
    """The virtual sleeper's night as an MNE Raw (EEG, EOG, EMG) as the front-end sees it
    (lead-off as 0, clipped to the ADC range), for YASA and replay.

    Returns the Raw, its channel names and the generating hypnogram (one stage per epoch).
    """
    import mne

    from bench.realism import ADC_RANGE_V, generate_night

    data, names, truth, sf, _ = generate_night(seed, hours, sfreq=sfreq)
    data = np.clip(np.nan_to_num(data, nan=0.0), -ADC_RANGE_V, ADC_RANGE_V)
    mne_info = mne.create_info(names, sf, ["eeg", "eog", "emg"], verbose="error")
    return mne.io.RawArray(data, mne_info, verbose="error"), names, truth


def time_yasa(raw, names: list[str]) -> tuple[float, list[str]]:
    """Seconds YASA's SleepStaging takes to stage ``raw``, and its hypnogram (W N1 N2 N3 R)."""
    import yasa

    t0 = time.perf_counter()
    pred = yasa.SleepStaging(raw, eeg_name=names[0], eog_name=names[1], emg_name=names[2]).predict()
    seconds = time.perf_counter() - t0
    # YASA >= 0.7 returns a Hypnogram object with WAKE/REM labels; older an array of labels.
    labels = np.asarray(getattr(pred, "hypno", pred)).astype(str)
    return seconds, [{"WAKE": "W", "REM": "R"}.get(s, s) for s in labels]


def time_night(source: str, seed: int) -> tuple[float, dict]:
    """Seconds for one closed-loop night in-process, and its summary."""
    from sim.runner import RunConfig, run_night

    t0 = time.perf_counter()
    result = run_night(RunConfig(source=source, seed=seed, record=False))
    return time.perf_counter() - t0, result.summary


def time_startup() -> tuple[float, set[str]]:
    """Seconds a fresh interpreter takes to import what ``slumbersync simulate`` runs.

    MNE is imported too: the simulator imports it only when it writes session.fif (or
    reads a recording), but every run does one of the two.

    Returns
    -------
    seconds : float
        Wall time of the child interpreter, start to exit.
    packages : set of str
        The top-level packages it had imported (what the time paid for).
    """
    code = (
        "import sim.cli, sim.runner, sim.outputs, mne, sys; "
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return time.perf_counter() - t0, set(done.stdout.split())


def time_fif_save(session_fif: Path) -> float:
    """Seconds MNE takes to save ``session_fif``'s samples and annotations to a new file.

    The samples are loaded first, so this is the write alone: what any run that keeps the
    night in session.fif pays, however fast the night itself was simulated.
    """
    import mne

    raw = mne.io.read_raw_fif(session_fif, preload=True, verbose="error")
    copy = session_fif.with_name("resaved_raw.fif")
    t0 = time.perf_counter()
    raw.save(copy, fmt="single", buffer_size_sec=30.0, overwrite=True, verbose="error")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench.speed", description=__doc__)
    parser.add_argument("--hours", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-e2e", action="store_true", help="skip the CLI run")
    parser.add_argument("--no-replay", action="store_true", help="skip the FIF replay")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import mne

    mne.set_log_level("ERROR")

    # Warm-up: imports, caches and first-call costs of both sides.
    time_night("sleeper://?hours=0.1", args.seed)
    warm_raw, warm_names, _ = virtual_night_raw(0.25, args.seed, 100.0)
    time_yasa(warm_raw, warm_names)

    night_s, summary = time_night(f"sleeper://?hours={args.hours:g}", args.seed)
    peak_mb = _peak_rss_mb()

    raw, names, truth = virtual_night_raw(args.hours, args.seed, 100.0)
    yasa_s, yasa_stages = time_yasa(raw, names)
    n = min(len(truth), len(yasa_stages))
    # The realism check of the virtual sleeper: an outside stager reads its nights right.
    yasa_accuracy = float(np.mean(np.array(truth[:n]) == np.array(yasa_stages[:n])))

    out: dict = {
        "hours": args.hours,
        "seed": args.seed,
        "night_s": round(night_s, 3),
        "yasa_s": round(yasa_s, 3),
        "ratio": round(night_s / yasa_s, 4),
        "x_realtime": round(args.hours * 3600 / night_s),
        "peak_mb": round(peak_mb, 1),
        "yasa_accuracy_vs_sleeper": round(yasa_accuracy, 4),
        "stimuli_delivered": summary["stimuli"]["delivered"],
        "cpu_load": round(summary["cpu"]["cpu_load"], 5),
    }
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_replay:
            path = Path(tmp) / "night_raw.fif"
            raw.save(path, fmt="single")
            replay_s, _ = time_night(str(path), args.seed)
            out["replay_s"] = round(replay_s, 3)
            out["replay_ratio"] = round(replay_s / yasa_s, 4)
        if not args.no_e2e:
            exe = Path(sys.executable).with_name("slumbersync")
            cmd = [
                str(exe),
                "-q",
                "simulate",
                "--hours",
                f"{args.hours:g}",
                "--seed",
                str(args.seed),
                "--out",
                str(Path(tmp) / "e2e"),
            ]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            out["e2e_s"] = round(time.perf_counter() - t0, 3)
            out["e2e_ratio"] = round(out["e2e_s"] / yasa_s, 4)
            out["startup_s"] = round(time_startup()[0], 3)
            out["fif_save_s"] = round(time_fif_save(Path(tmp) / "e2e" / "session.fif"), 3)
            out["e2e_floor_ratio"] = round((out["startup_s"] + out["fif_save_s"]) / yasa_s, 4)
    width = max(len(k) for k in out)
    for key, value in out.items():
        print(f"{key:<{width}}  {value}")
    print(json_line(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
