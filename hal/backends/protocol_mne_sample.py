"""``mne-sample://``: the EEG of MNE's "sample" data set (auditory/visual, 60 EEG).

Not sleep, but a real recording every MNE user can have: handy to check a pipeline end to
end. The data set is looked up with ``mne.datasets.sample.data_path(download=False)`` and
never downloaded here (it is 1.6 GB). Default rows: every good EEG channel (``EEG 001``
..., the bad ``EEG 053`` left out), then ``EOG 061``; the query takes the options of
:meth:`hal.recording.RecordingSource.from_raw` (``mne-sample://?channel=EEG 001``).
"""

from __future__ import annotations

import logging
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

#: The raw recording inside the data set.
RAW_FILE = Path("MEG", "sample", "sample_audvis_raw.fif")


def open_source(url: str, **options: Any) -> RecordingSource:
    """Open ``mne-sample://`` (optionally ``?channel=...&sfreq=...``).

    Parameters
    ----------
    url : str
        ``mne-sample://`` with an optional query string of recording options.
    **options
        ``sfreq``, ``channel``, ``eog``, ``emg``, ``ecg``, ``min_sfreq``; others ignored.

    Returns
    -------
    RecordingSource
        EEG channels (then EOG) at the device rate, in volts.

    Raises
    ------
    UserInputError
        The data set is not on this machine, or the URL names something else.
    """
    import mne

    parts = urlsplit(url)
    if parts.netloc or parts.path.strip("/"):
        raise UserInputError(
            f"mne-sample:// takes no path, only options (mne-sample://?channel=EEG 001); "
            f"got {url!r}."
        )
    opts = recording_options(parts.query, options, where=url)
    folder = mne_data_folder("MNE_DATASETS_SAMPLE_PATH")
    root = ""
    # data_path creates ~/mne_data when nothing is configured: only ask where a folder is.
    if folder.is_dir():
        with mne_errors("MNE's sample data set", "locate"):
            root = str(mne.datasets.sample.data_path(download=False, verbose="WARNING"))
    # data_path(download=False) answers "" (a Path of "" reads ".") when the set is absent.
    if root in ("", "."):
        raise UserInputError(
            f"MNE's sample data set is not in {folder}. On a connected machine run "
            f'python -c "import mne; mne.datasets.sample.data_path()" (1.6 GB) and copy its '
            f"MNE-sample-data folder into {folder} (or set MNE_DATASETS_SAMPLE_PATH), or pass "
            f"a recording's path instead."
        )
    path = Path(root) / RAW_FILE
    raw = read_raw(path)
    if opts.get("channel") is None:
        bads = set(raw.info["bads"])
        types = raw.get_channel_types()
        eeg = [n for n, t in zip(raw.ch_names, types, strict=True) if t == "eeg" and n not in bads]
        if not eeg:
            raise UserInputError(f"{path} has no good EEG channel: pass channel=NAME.")
        logger.info("%s: %d EEG channels (bad ones left out: %s)", url, len(eeg), sorted(bads))
        opts["channel"] = eeg
    return RecordingSource.from_raw(raw, description=str(path), **opts)
