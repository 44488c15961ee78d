"""``sleep-physionet://SUBJECT/NIGHT``: a night of the Sleep-EDF "age" study, with its
expert hypnogram as annotations.

The files come from :func:`mne.datasets.sleep_physionet.age.fetch_data`, MNE's own
fetcher, which keeps them in ``PHYSIONET_SLEEP_PATH`` (default ``~/mne_data``). When they
are there nothing touches the network. When they are not, a quick probe decides: no route
to PhysioNet means a one-line error saying how to get the files, never a long wait.

``sleep-physionet://0/1?channel=EEG Fpz-Cz`` is subject 0, night 1; the query takes the
options of :meth:`hal.recording.RecordingSource.from_raw`. The default EEG channel is the
file's first one, ``EEG Fpz-Cz``. Sleep-EDF cassette files span about a day (the night is
inside it); the whole file is replayed.
"""

from __future__ import annotations

import csv
import logging
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hal.base import UserInputError
from hal.recording import (
    RecordingSource,
    mne_data_folder,
    mne_errors,
    read_raw,
    recording_options,
)

__all__ = ["open_source"]

logger = logging.getLogger(__name__)

#: How long the reachability probe may take before the source gives up (seconds).
PROBE_TIMEOUT_S = 5.0

_PROBE_URL = "https://physionet.org/"


def open_source(url: str, **options: Any) -> RecordingSource:
    """Open ``sleep-physionet://SUBJECT/NIGHT`` (night defaults to 1).

    Parameters
    ----------
    url : str
        ``sleep-physionet://0/1``, optionally with a query string of recording options.
    **options
        ``sfreq``, ``channel``, ``eog``, ``emg``, ``ecg``, ``min_sfreq`` as for
        ``file://`` sources; others are ignored.

    Returns
    -------
    RecordingSource
        The polysomnography at the device rate, hypnogram stages (``"Sleep stage W"``...)
        in ``info.annotations``.

    Raises
    ------
    UserInputError
        Bad subject or night, files absent and PhysioNet unreachable, unusable files.
    """
    import mne

    parts = urlsplit(url)
    subject, night = _subject_night(parts.netloc, parts.path, url)
    opts = recording_options(parts.query, options, where=url)
    psg, hypnogram = _local_files(subject, night)
    raw = read_raw(psg)
    with mne_errors(hypnogram):
        annotations = mne.read_annotations(hypnogram)
        # The hypnogram runs past the signal's end; MNE crops it (and would warn).
        raw.set_annotations(annotations, emit_warning=False)
    logger.info("%s is %s with %s", url, psg, Path(hypnogram).name)
    return RecordingSource.from_raw(raw, description=str(psg), **opts)


def _subject_night(netloc: str, path: str, url: str) -> tuple[int, int]:
    """Parse ``SUBJECT/NIGHT`` from the URL."""
    night_text = path.strip("/") or "1"
    try:
        subject, night = int(netloc), int(night_text)
    except ValueError:
        raise UserInputError(
            f"Expected sleep-physionet://SUBJECT/NIGHT with numbers (sleep-physionet://0/1), "
            f"got {url!r}."
        ) from None
    records = _records()
    if records is not None and (subject, night) not in records:
        subjects = sorted({s for s, _ in records})
        raise UserInputError(
            f"Sleep-EDF has no subject {subject} night {night} ({url!r}): subjects are "
            f"{subjects[0]}-{subjects[-1]} except {_missing(subjects)}, nights 1 and 2 "
            f"(night 1 is missing for subjects 36 and 52, night 2 for subject 13)."
        )
    return subject, night


def _missing(subjects: list[int]) -> str:
    gaps = sorted(set(range(subjects[0], subjects[-1] + 1)) - set(subjects))
    return ", ".join(str(g) for g in gaps)


def _records() -> dict[tuple[int, int], tuple[str, str]] | None:
    """``(subject, night) -> (psg file name, hypnogram file name)`` from MNE's table."""
    from mne.datasets.sleep_physionet import age

    # The table MNE's fetcher reads (age_records.csv beside it); None if it moved.
    table = Path(age.__file__).with_name("age_records.csv")
    if not table.is_file():
        return None
    files: dict[tuple[int, int], dict[str, str]] = {}
    with open(table, newline="") as fid:
        for row in csv.DictReader(fid):
            key = (int(row["subject"]), int(row["night"]))
            files.setdefault(key, {})[row["record type"]] = row["fname"]
    return {k: (v["PSG"], v["Hypnogram"]) for k, v in files.items() if len(v) == 2}


def _local_files(subject: int, night: int) -> tuple[str, str]:
    """Paths of the PSG and hypnogram files, fetched only when PhysioNet answers."""
    from mne.datasets.sleep_physionet import age

    # Look before calling the fetcher: it creates ~/mne_data and may start a download.
    folder = mne_data_folder("PHYSIONET_SLEEP_PATH") / "physionet-sleep-data"
    names = (_records() or {}).get((subject, night))
    present = names is not None and all((folder / n).is_file() for n in names)
    if not present:
        reason = _unreachable(_PROBE_URL, PROBE_TIMEOUT_S)
        if reason is not None:
            wanted = " and ".join(names) if names else "its files"
            raise UserInputError(
                f"Sleep-EDF subject {subject} night {night} ({wanted}) is not in {folder} and "
                f"PhysioNet cannot be reached from here ({reason}). On a connected machine run "
                f'python -c "import mne; mne.datasets.sleep_physionet.age.fetch_data('
                f'subjects=[{subject}], recording=[{night}])" and copy the files into {folder} '
                f"(or set PHYSIONET_SLEEP_PATH), or pass the PSG file's path instead."
            )
        logger.info("downloading Sleep-EDF subject %d night %d into %s", subject, night, folder)
    with mne_errors(f"Sleep-EDF subject {subject} night {night}", "fetch"):
        ((psg, hypnogram),) = age.fetch_data(
            subjects=[subject], recording=[night], on_missing="raise", verbose="WARNING"
        )
    return psg, hypnogram


def _unreachable(url: str, timeout: float) -> str | None:
    """None if ``url`` answers within ``timeout`` seconds, else why not.

    The probe runs in a daemon thread: a name lookup is not bound by the socket timeout
    and may stall on a machine without DNS, and a stalled probe must not stall the run.
    """
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            with urllib.request.urlopen(url, timeout=timeout):
                outcome.append(None)
        except Exception as err:  # any failure means "cannot download from here"
            outcome.append(str(getattr(err, "reason", err)) or type(err).__name__)

    start = time.monotonic()
    thread = threading.Thread(target=probe, name="physionet-probe", daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    logger.debug("PhysioNet probe took %.2f s", time.monotonic() - start)
    if not outcome:
        return f"no answer within {timeout:g} s"
    return outcome[0]
