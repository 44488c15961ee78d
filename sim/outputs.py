"""Run outputs, the contract other tools read (DESIGN.md, "Run outputs").

``events.jsonl``, ``hypnogram.csv``, ``summary.json``, ``session.fif`` and ``report.png``
are each written to a temporary name in the output folder and renamed into place, so a run
that fails half-way never leaves a half-written file under a final name. A run into a folder
that holds a previous run's outputs removes those first (and nothing else), so the folder
never mixes two runs.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import functools
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
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
#: Every file :func:`write_outputs` writes, in the order a previous run's are removed:
#: ``summary.json`` first, as its presence says a run's outputs are complete.
OUTPUT_NAMES = ("summary.json", "events.jsonl", "hypnogram.csv", "session.fif", "report.png")


def prepare_output_folder(out_dir: str | Path) -> list[Path]:
    """Create the output folder if needed and check that files can be created in it.

    Called before a night is simulated, so that an unusable ``--out`` is a one-line error
    at once rather than after the night.

    Parameters
    ----------
    out_dir : str or Path
        Output folder.

    Returns
    -------
    list of Path
        The folders this call created, deepest first (see :func:`remove_created_folders`).

    Raises
    ------
    UserInputError
        ``out_dir`` is a file, cannot be created, does not accept new files, or holds a
        folder where an output file goes.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserInputError(f"Output folder expected, got an existing file: {out}")
    missing: list[Path] = []
    folder = out.absolute()
    while not folder.exists() and not folder.is_symlink() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        remove_created_folders(missing)
        raise UserInputError(f"Cannot create output folder {out}: {err.strerror or err}") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".slumbersync-probe-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        remove_created_folders(missing)
        raise UserInputError(
            f"Cannot write into output folder {out}: {err.strerror or err}"
        ) from None
    for name in OUTPUT_NAMES:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            remove_created_folders(missing)
            raise UserInputError(
                f"Cannot write {path}: a folder of that name is in the way in the output folder."
            )
    return missing


def remove_created_folders(folders: list[Path]) -> None:
    """Remove the folders :func:`prepare_output_folder` created, while they are empty.

    A run that failed leaves no empty folder behind. Removal stops at the first folder
    that cannot be removed (e.g. it is not empty), leaving it and its parents.

    Parameters
    ----------
    folders : list of Path
        The folders, deepest first, as :func:`prepare_output_folder` returned them.
    """
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def remove_previous_outputs(out: Path) -> list[str]:
    """Remove a previous run's outputs from ``out`` (only :data:`OUTPUT_NAMES`).

    Parameters
    ----------
    out : Path
        Output folder.

    Returns
    -------
    list of str
        The names removed.

    Raises
    ------
    UserInputError
        One of them cannot be removed.
    """
    removed = []
    for name in OUTPUT_NAMES:
        path = out / name
        if not (path.is_file() or path.is_symlink()):
            continue
        try:
            path.unlink()
        except OSError as err:
            raise UserInputError(
                f"Cannot remove the previous run's {path}: {err.strerror or err}"
            ) from None
        removed.append(name)
    if removed:
        logger.info("removed the previous run's %s from %s", ", ".join(removed), out)
    return removed


@contextlib.contextmanager
def atomic_path(final: Path, tmp_suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; rename it into place on success.

    On an error in the ``with`` block the temporary file is removed and ``final`` is left
    as it was.

    Parameters
    ----------
    final : Path
        The file's final name.
    tmp_suffix : str or None
        Ends the temporary name (default: the suffix of ``final``).

    Yields
    ------
    Path
        The temporary file (created empty) to write.
    """
    suffix = final.suffix if tmp_suffix is None else tmp_suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}-", suffix=suffix, dir=final.parent)
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
    """Write ``events.jsonl``: one JSON object per line, ordered by ``t``.

    Top-level float values are rounded to 6 decimals (microseconds for times).

    Parameters
    ----------
    result : RunResult
        The night.
    path : Path
        The file to write.
    """

    def writer(fh) -> None:
        for ev in sorted(result.events, key=lambda e: e["t"]):
            ev = {k: round(v, 6) if isinstance(v, float) else v for k, v in ev.items()}
            fh.write(json.dumps(ev, default=_json_default) + "\n")

    _write_text(path, writer)


def format_seconds(seconds: float) -> str:
    """A time in seconds as a plain decimal number, to the microsecond, without exponent.

    ``30`` stays ``30`` and ``1000020`` stays ``1000020`` (``:g`` keeps six significant
    digits: it writes ``1.00002e+06`` from 10^6 s on and ``100016`` for ``100015.5``); an
    epoch start that is not a whole second (a device rate that is not a whole number of
    samples per 30 s) keeps its fraction, to the microsecond as in ``events.jsonl``.

    Parameters
    ----------
    seconds : float
        The time.

    Returns
    -------
    str
        The number, without trailing zeros (``"0"`` for minus zero).
    """
    text = f"{float(seconds):.6f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def write_hypnogram(result: RunResult, path: Path) -> None:
    """Write ``hypnogram.csv`` (header ``epoch_start_s,stage``).

    Parameters
    ----------
    result : RunResult
        The night; its online stager's epochs, ordered by start.
    path : Path
        The file to write.
    """

    def writer(fh) -> None:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["epoch_start_s", "stage"])
        for start, stage in sorted(result.hypnogram):
            w.writerow([format_seconds(start), stage])

    _write_text(path, writer)


def write_summary(result: RunResult, path: Path) -> None:
    """Write ``summary.json``.

    Parameters
    ----------
    result : RunResult
        The night; its ``summary``.
    path : Path
        The file to write.
    """
    _write_text(path, lambda fh: json.dump(result.summary, fh, indent=2, default=_json_default))


#: Prefix of the online stager's annotations (``Sleep stage N2``, as Sleep-EDF and MNE's
#: sleep tutorials name stages); a recording's own stage annotations get ``recording/``.
STAGE_PREFIX = "Sleep stage "


def session_annotations(result: RunResult) -> list[tuple[float, float, str]]:
    """Annotations of the session: the recording's, stimuli, stages and bad signal.

    A recording's own stage annotations (an expert's hypnogram) are kept as
    ``recording/Sleep stage ...``: under their own name they would be counted with the
    online stager's, and a reader could not tell the two hypnograms apart.

    Parameters
    ----------
    result : RunResult
        The night.

    Returns
    -------
    list of tuple
        ``(onset_s, duration_s, description)``, sorted; onsets in seconds from the first
        sample. Stimuli are ``stim/<modality>/delivered`` or
        ``stim/<modality>/withheld/<reason>``, bad signal ``BAD_signal/<cause>``, other
        safety events ``safety/<event>``, stages ``Sleep stage <stage>`` (30 s each).
    """
    ann = []
    renamed = 0
    for onset, duration, description in result.annotations:
        if description.startswith(STAGE_PREFIX):
            description = f"recording/{description}"
            renamed += 1
        ann.append((onset, duration, description))
    if renamed:
        logger.info(
            "session.fif: the recording's %d stage annotations are kept as "
            "'recording/Sleep stage ...', the online stager's as 'Sleep stage ...'",
            renamed,
        )
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
        ann.append((start, epoch_s, f"{STAGE_PREFIX}{stage}"))
    return sorted(ann)


def fif_channel_names(names: list[str]) -> list[str]:
    """Channel names FIF can hold: ASCII, each name kept unique.

    MNE writes names as ASCII, so ``C4–M1 µ`` (from an EDF or BrainVision file) becomes
    ``C4-M1 u``-like text; a change is logged. events.jsonl and summary.json keep the
    original names.

    Parameters
    ----------
    names : list of str
        Channel names in row order.

    Returns
    -------
    list of str
        The names to write, in the same order (``-2``, ``-3``... appended to a repeat).
    """
    import unicodedata

    out: list[str] = []
    for name in names:
        # Accents are dropped from their letters (NFKD splits 'Ö' into 'O' and a combining
        # mark), dashes become '-', µ 'u'; anything else without an ASCII form is '?'.
        decomposed = unicodedata.normalize(
            "NFKD", name.replace("\u2013", "-").replace("\u2014", "-").replace("\u00b5", "u")
        )
        ascii_name = (
            "".join(c for c in decomposed if not unicodedata.combining(c))
            .encode("ascii", "replace")
            .decode("ascii")
        )
        candidate, k = ascii_name, 1
        while candidate in out:
            k += 1
            candidate = f"{ascii_name}-{k}"
        if candidate != name:
            logger.warning(
                "session.fif: channel %r written as %r (FIF names are ASCII)", name, candidate
            )
        out.append(candidate)
    return out


def recording_start(result: RunResult) -> datetime.datetime | None:
    """When the night's first sample was recorded (UTC), if the source knows it.

    A recording carries its start (``SourceInfo.meas_date``, POSIX seconds) into the
    result's ``meas_date``; the virtual sleeper has none.

    Parameters
    ----------
    result : RunResult
        The night.

    Returns
    -------
    datetime.datetime or None
        The start, timezone-aware in UTC; None when unknown.
    """
    posix = result.meas_date
    if posix is None:
        return None
    return datetime.datetime.fromtimestamp(float(posix), tz=datetime.UTC)


def _recorded_raw(result: RunResult):
    """An MNE Raw that reads the recorded float32 samples one buffer at a time, in SI units.

    Its ``meas_date`` is the recording's start when known (:func:`recording_start`), else
    None; its first sample is sample 0 either way, so annotation onsets count from it.

    A RawArray needs the whole night as float64 volts: 350 MB for 8 h of six channels,
    whose allocation and conversion cost more than writing the file. This reader converts
    each buffer as ``raw.save`` asks for it, with the same arithmetic (float32 widened to
    float64, times the unit scale), so the file holds the same numbers.
    """
    import mne

    class _RecordedRaw(mne.io.BaseRaw):
        def _read_segment_file(self, data, idx, fi, start, stop, cals, mult):
            # The info has no projector nor compensation, so MNE never passes ``mult``.
            assert mult is None
            extras = self._raw_extras[fi]
            rows = extras["recorded"][idx, start:stop]
            np.multiply(rows, extras["scale"][idx, np.newaxis] * cals, out=data)

        @functools.cached_property
        def times(self) -> np.ndarray:
            # MNE recomputes the times of the whole night on every access (three per
            # save); they never change here.
            out = np.arange(self.n_times, dtype=np.float64) / self.info["sfreq"]
            out.flags["WRITEABLE"] = False
            return out

    types = [MNE_TYPES[r] for r in result.ch_roles]
    info = mne.create_info(fif_channel_names(result.ch_names), result.sfreq, types, verbose="error")
    start = recording_start(result)
    if start is not None:
        info.set_meas_date(start)
    scale = np.array([1e-6 if r in MICROVOLT_ROLES else 1.0 for r in result.ch_roles])
    return _RecordedRaw(
        info,
        last_samps=[result.recorded.shape[1] - 1],
        raw_extras=[{"recorded": result.recorded, "scale": scale}],
        verbose="error",
    )


def write_session_fif(result: RunResult, path: Path) -> None:
    """Write ``session.fif``: the samples the firmware saw, with annotations.

    Its ``meas_date`` is the recording's start when the source knows it (None for the
    virtual sleeper); annotation onsets are seconds from the first sample either way.
    Annotations outside the recording are dropped, and those running past its end cut
    there. Samples are written as float32 in SI units: volts for EEG, EOG, EMG and ECG,
    native units for the other roles.

    Parameters
    ----------
    result : RunResult
        The night, with its recorded samples.
    path : Path
        The file to write.

    Raises
    ------
    ValueError
        The run kept no samples (``record=False``).
    """
    import mne

    if result.recorded is None:
        raise ValueError("The run kept no samples (record=False): nothing to write.")
    raw = _recorded_raw(result)
    ann = session_annotations(result)
    end = result.n_samples / result.sfreq
    ann = [(o, min(d, max(end - o, 0.0)), s) for o, d, s in ann if 0 <= o < end]
    if ann:
        onsets, durations, descriptions = zip(*ann, strict=True)
        raw.set_annotations(mne.Annotations(onsets, durations, descriptions))
    # DESIGN names the file session.fif, which MNE would warn about; the temporary name
    # follows MNE's "*_raw.fif" convention instead, so no (process-wide, not thread-safe)
    # warnings filter is needed while the analysis runs on a worker thread.
    with atomic_path(path, tmp_suffix="_raw.fif") as tmp:
        # 30-s buffers: MNE's default of one second costs 28,800 Python calls a night.
        raw.save(tmp, overwrite=True, fmt="single", buffer_size_sec=30.0, verbose="error")


def _usable_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        return os.cpu_count() or 1


def write_outputs(result: RunResult, out_dir: str | Path, report: bool = True) -> Path:
    """Write every run output into ``out_dir`` (created if needed).

    The outputs of a previous run in ``out_dir`` (:data:`OUTPUT_NAMES`, nothing else) are
    removed first, so that a run without a report, or one whose writing fails, never
    leaves the folder holding files of two runs.

    With more than one CPU, the offline phase and spindle envelope (for the summary and the
    report) are computed on a worker thread while this thread writes the files: they are
    NumPy and SciPy work that releases the GIL. Every file is written by this thread,
    under a temporary name then renamed; an error in the worker is raised here, and
    ``summary.json`` is then not written.

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

    Raises
    ------
    UserInputError
        The folder is unusable, or a previous run's output cannot be removed.
    """
    from sim import analysis

    out = Path(out_dir)
    prepare_output_folder(out)
    remove_previous_outputs(out)
    need_analysis = "analysis" not in result.summary
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="outputs-analysis") as pool:
        # In the order they are needed; the report waits for what is not ready yet
        # (sim.analysis caches them on the result under a lock). On a single CPU a
        # worker only adds switching: the report and the summary compute them on demand.
        jobs = []
        if _usable_cpus() > 1:
            if need_analysis or report:
                jobs.append(pool.submit(analysis.recorded_phase, result))
            if report:
                jobs.append(pool.submit(analysis.recorded_sigma_envelope, result))
        try:
            write_events(result, out / "events.jsonl")
            write_hypnogram(result, out / "hypnogram.csv")
            if result.recorded is not None:
                write_session_fif(result, out / "session.fif")
            if report:
                # Looked up at call time (tests replace it).
                from sim import report as report_module

                with atomic_path(out / "report.png") as tmp:
                    report_module.draw_report(result, tmp)
            for job in jobs:
                job.result()  # the worker's error, if any
        except BaseException:
            # Drop the jobs not started; a running one is waited for when the pool closes,
            # so no thread outlives this call.
            for job in jobs:
                job.cancel()
            raise
    if need_analysis:
        result.summary["analysis"] = analysis.night_analysis(result)
    # summary.json last: its presence says the run's outputs are complete.
    write_summary(result, out / "summary.json")
    logger.info("outputs written to %s", out)
    return out
