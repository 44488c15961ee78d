"""``file://`` sources: a recording on disk, in any format MNE reads.

``file:///data/night.edf?channel=C3-A1&eog=none`` opens ``/data/night.edf`` with the EEG
channel ``C3-A1`` and no EOG row. :func:`hal.open_source` turns a plain path into such a
URL, so ``open_source("night.edf")`` works too. Options are those of
:meth:`hal.recording.RecordingSource.from_raw`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

from hal.base import UserInputError
from hal.recording import RecordingSource, recording_options

__all__ = ["open_source"]


def open_source(
    url: str,
    *,
    sfreq: float | None = None,
    channel: str | list[str] | None = None,
    eog: str | bool | None = None,
    emg: str | bool | None = None,
    ecg: str | bool | None = None,
    min_sfreq: float | None = None,
    **ignored: Any,
) -> RecordingSource:
    """Open ``file:///abs/path.edf?channel=...`` as a replayed recording.

    Parameters
    ----------
    url : str
        ``file://`` URL with an absolute path; query keys ``channel``, ``eog``, ``emg``,
        ``ecg``, ``sfreq``, ``min_sfreq``, ``units`` (the unit of the stored numbers of the
        picked channels, over the header's: ``V``, ``mV``, ``uV`` or ``nV``).
    sfreq : float, optional
        Device rate (default 250 Hz).
    channel : str or list of str, optional
        EEG channel(s); default the first EEG channel (logged).
    eog, emg, ecg : str or bool, optional
        Channel for the role, ``"none"`` to leave it out; default found by type or name.
    min_sfreq : float, optional
        Lowest recording rate accepted (default 100 Hz).
    **ignored
        Options meant for other backends; ignored.

    Returns
    -------
    RecordingSource
        The recording at the device rate, in volts.

    Raises
    ------
    UserInputError
        Bad URL or option, or an unusable recording (see :mod:`hal.recording`).

    Notes
    -----
    Keyword options win over those in the query string, which win over the defaults.
    """
    parts = urlsplit(url)
    if parts.scheme != "file":
        raise UserInputError(f"Not a file:// URL: {url!r}")
    if parts.netloc not in ("", "localhost"):
        raise UserInputError(
            f"file:// URLs need an absolute path (file:///data/night.edf), but {url!r} names "
            f"the host {parts.netloc!r}; for a relative path pass the path itself."
        )
    if not parts.path:
        raise UserInputError(f"No path in {url!r}: use file:///data/night.edf.")
    path = Path(url2pathname(parts.path))
    options = recording_options(
        parts.query,
        {
            "sfreq": sfreq,
            "channel": channel,
            "eog": eog,
            "emg": emg,
            "ecg": ecg,
            "min_sfreq": min_sfreq,
            **ignored,
        },
        where=url,
    )
    return RecordingSource.from_path(path, **options)
