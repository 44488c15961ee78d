"""Run outputs, the contract other tools read (DESIGN.md, "Run outputs").

``events.jsonl``, ``hypnogram.csv``, ``summary.json``, ``session.fif`` and ``report.png``
are each written to a temporary name in the output folder and renamed into place, so a run
that fails half-way never leaves a half-written file under a final name.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from hal.base import UserInputError
from sim.runner import RunResult

logger = logging.getLogger(__name__)

#: MNE channel type of each role.
MNE_TYPES = {
    "eeg": "eeg",
    "eog": "eog",
    "emg": "emg",
    "ecg": "ecg",
    "accel": "misc",
    "resp": "resp",
    "misc": "misc",
}
#: Roles recorded in µV (the rest in native units).
MICROVOLT_ROLES = ("eeg", "eog", "emg", "ecg")


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; rename it into place on success."""
    fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}-", suffix=final.suffix, dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes the file private; outputs get the permissions of any new file.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _write_text(final: Path, writer: Callable[[object], None]) -> None:
    with atomic_path(final) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        writer(fh)


def _json_default(obj: object) -> object:
    if isinstance(obj, np.integer | np.floating):
        return obj.item()
    if isinstance(obj, np.bool_):
        return bool(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_events(result: RunResult, path: Path) -> None:
    """Write ``events.jsonl``: one JSON object per line, ordered by ``t``."""

    def writer(fh) -> None:
        for ev in sorted(result.events, key=lambda e: e["t"]):
            ev = {k: round(v, 6) if isinstance(v, float) else v for k, v in ev.items()}
            fh.write(json.dumps(ev, default=_json_default) + "\n")

    _write_text(path, writer)


def write_hypnogram(result: RunResult, path: Path) -> None:
    """Write ``hypnogram.csv`` (header ``epoch_start_s,stage``)."""

    def writer(fh) -> None:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["epoch_start_s", "stage"])
        for start, stage in sorted(result.hypnogram):
            w.writerow([f"{start:g}", stage])

    _write_text(path, writer)


def write_summary(result: RunResult, path: Path) -> None:
    """Write ``summary.json``."""
    _write_text(path, lambda fh: json.dump(result.summary, fh, indent=2, default=_json_default))


def session_annotations(result: RunResult) -> list[tuple[float, float, str]]:
    """Annotations of the session: the recording's, stimuli, stages and bad signal."""
    ann = list(result.annotations)
    epoch_s = 30.0
    for ev in result.events:
        if ev["kind"] == "stim":
            state = "delivered" if ev["delivered"] else f"withheld/{ev['reason']}"
            ann.append((ev["t"], ev.get("duration", 0.0), f"stim/{ev['modality']}/{state}"))
        elif ev["kind"] == "safety" and ev.get("event") == "bad_signal":
            # MNE and YASA skip spans whose description starts with "BAD".
            ann.append((ev["t"], ev["duration"], f"BAD_signal/{ev['cause']}"))
        elif ev["kind"] == "safety":
            ann.append((ev["t"], 0.0, f"safety/{ev.get('event')}"))
    for start, stage in result.hypnogram:
        ann.append((start, epoch_s, f"Sleep stage {stage}"))
    return sorted(ann)


def write_session_fif(result: RunResult, path: Path) -> None:
    """Write ``session.fif``: the samples the firmware saw, with annotations."""
    import mne

    if result.recorded is None:
        raise ValueError("The run kept no samples (record=False): nothing to write.")
    types = [MNE_TYPES[r] for r in result.ch_roles]
    info = mne.create_info(result.ch_names, result.sfreq, types, verbose="error")
    scale = np.array([1e-6 if r in MICROVOLT_ROLES else 1.0 for r in result.ch_roles])
    data = result.recorded.astype(np.float64)
    data *= scale[:, np.newaxis]
    raw = mne.io.RawArray(data, info, copy="auto", verbose="error")
    ann = session_annotations(result)
    end = result.n_samples / result.sfreq
    ann = [(o, min(d, max(end - o, 0.0)), s) for o, d, s in ann if 0 <= o < end]
    if ann:
        onsets, durations, descriptions = zip(*ann, strict=True)
        raw.set_annotations(mne.Annotations(onsets, durations, descriptions))
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # DESIGN names the file session.fif; MNE would prefer "*_raw.fif" and warns.
        warnings.filterwarnings("ignore", message=".*does not conform to MNE naming.*")
        # 30-s buffers: MNE's default of one second costs 28,800 Python calls a night.
        raw.save(tmp, overwrite=True, fmt="single", buffer_size_sec=30.0, verbose="error")


def write_outputs(result: RunResult, out_dir: str | Path, report: bool = True) -> Path:
    """Write every run output into ``out_dir`` (created if needed).

    Parameters
    ----------
    result : RunResult
        The night.
    out_dir : str or Path
        Output folder.
    report : bool
        Also draw ``report.png``.

    Returns
    -------
    Path
        The output folder.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserInputError(f"Output folder expected, got an existing file: {out}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserInputError(f"Cannot create output folder {out}: {err.strerror}") from None
    write_events(result, out / "events.jsonl")
    write_hypnogram(result, out / "hypnogram.csv")
    if result.recorded is not None:
        write_session_fif(result, out / "session.fif")
    if report:
        from sim.report import draw_report

        with atomic_path(out / "report.png") as tmp:
            draw_report(result, tmp)
    if "analysis" not in result.summary:
        from sim.analysis import night_analysis

        result.summary["analysis"] = night_analysis(result)
    # summary.json last: its presence says the run's outputs are complete.
    write_summary(result, out / "summary.json")
    logger.info("outputs written to %s", out)
    return out
