"""EDF/BDF headers and EDF+D time-keeping, read where MNE does not expose them.

MNE reads EDF and BDF data; this module reads what its reader keeps private or skips:
per-signal units (MNE matches them case-sensitively and as latin-1), per-signal rates
(MNE upsamples slower signals to the fastest), the EDF+ reserved field, and the
time-keeping annotations (TALs) of each data record, without which an EDF+D
(discontinuous) file is read as if its records were back to back.
:mod:`hal.recording` uses them; nothing else needs to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hal.base import Annotation

if TYPE_CHECKING:
    import mne

__all__ = [
    "TAL_LABELS",
    "EdfFile",
    "EdfHeader",
    "Layout",
    "discontinuous_layout",
    "edf_file",
    "edf_tals",
    "lay_out",
    "read_edf_header",
    "record_onsets",
    "tal_annotations",
]

# Labels of EDF+/BDF+ annotation signals (MNE excludes them from the channels).
TAL_LABELS = ("EDF Annotations", "BDF Annotations")
# A time-stamped annotation list: onset, optional duration, texts (EDF+ spec, 2.2.2).
_TAL = re.compile(rb"([+-]\d+(?:\.\d*)?)(?:\x15(\d+(?:\.\d*)?))?((?:\x14[^\x14\x00]*)*)\x14\x00")


@dataclass(frozen=True)
class EdfHeader:
    """The parts of an EDF/BDF header MNE uses but does not expose publicly.

    Read here because MNE's reader reads units case-sensitively and latin-1 only, keeps
    per-signal rates and the EDF+ reserved field private, and has no EDF+D support.
    """

    bdf: bool
    reserved: str
    header_bytes: int
    n_records: int  # complete data records in the file (from its size)
    record_s: float
    labels: tuple[str, ...]
    units: tuple[str, ...]
    n_samps: tuple[int, ...]

    @property
    def sample_bytes(self) -> int:
        """Bytes per sample: 3 in BDF, 2 in EDF."""
        return 3 if self.bdf else 2

    @property
    def record_bytes(self) -> int:
        """Bytes per data record, all signals."""
        return sum(self.n_samps) * self.sample_bytes

    @property
    def annotation_signals(self) -> list[int]:
        """Indices of the EDF+/BDF+ annotation signals."""
        return [i for i, label in enumerate(self.labels) if label in TAL_LABELS]

    @property
    def discontinuous(self) -> bool:
        """EDF+D / BDF+D: the data records are not back to back in time."""
        return self.reserved.upper().startswith(("EDF+D", "BDF+D"))


def _header_text(raw: bytes) -> str:
    """A header field as text: UTF-8 when it is (``µV`` as C2 B5), else latin-1."""
    # The EDF spec says ASCII; writers put the micro sign in as latin-1 or as UTF-8.
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return raw.decode("latin-1").strip()


def read_edf_header(path: Path) -> EdfHeader:
    """Parse an EDF/BDF header (raises ValueError or OSError when it is not one)."""
    with open(path, "rb") as fid:
        head = fid.read(256)
        if len(head) < 256:
            raise ValueError("header shorter than 256 bytes")
        n_signals = int(head[252:256].decode("ascii").strip())
        block = fid.read(256 * n_signals)
        if len(block) < 256 * n_signals:
            raise ValueError("signal headers cut short")
        size = fid.seek(0, 2)

    def field(offset: int, width: int) -> list[str]:
        return [
            _header_text(block[offset + width * i : offset + width * (i + 1)])
            for i in range(n_signals)
        ]

    n_samps = tuple(int(v) for v in field(216 * n_signals, 8))
    header_bytes = int(head[184:192].decode("ascii").strip())
    record_s = float(head[244:252].decode("ascii").strip()) or 1.0
    bdf = head[:1] == b"\xff"
    per_record = sum(n_samps) * (3 if bdf else 2)
    return EdfHeader(
        bdf=bdf,
        reserved=head[192:236].decode("latin-1").strip(),
        header_bytes=header_bytes,
        n_records=max(0, size - header_bytes) // per_record if per_record else 0,
        record_s=record_s,
        labels=tuple(field(0, 16)),
        units=tuple(field(96 * n_signals, 8)),
        n_samps=n_samps,
    )


@dataclass(frozen=True)
class EdfFile:
    """An EDF/BDF recording as MNE opened it, tied to its header."""

    path: Path
    header: EdfHeader
    #: MNE channel name -> index of its signal in the header.
    index: dict[str, int]
    #: MNE channel name -> the multiplier to volts MNE applied (None: not known).
    applied: dict[str, float] | None

    def rate(self, name: str) -> float:
        """The rate ``name`` was recorded at (MNE upsamples slower signals to the fastest)."""
        return self.header.n_samps[self.index[name]] / self.header.record_s


def edf_file(raw: mne.io.BaseRaw) -> EdfFile | None:
    """The EDF/BDF header behind ``raw`` (before any pick), or None for other formats."""
    files = getattr(raw, "filenames", ())
    if not files or files[0] is None or Path(files[0]).suffix.lower() not in (".edf", ".bdf"):
        return None
    path = Path(files[0])
    try:
        header = read_edf_header(path)
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    names = list(raw.ch_names)
    try:
        # Private: MNE's map from its channels to the header's signals (duplicate labels
        # are renamed, "EEG-0", "EEG-1") and the multiplier to volts it applied to each.
        extras = raw._raw_extras[0]
        orig = [int(i) for i in raw._read_picks[0]]
        sel = [int(extras["sel"][i]) for i in orig]
        applied: dict[str, float] | None = {
            n: float(extras["units"][i]) for n, i in zip(names, orig, strict=True)
        }
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        # Fall back on the header's order, without the annotation signals MNE drops.
        sel = [i for i in range(len(header.labels)) if i not in header.annotation_signals]
        applied = None
        if len(sel) != len(names):
            return None
    if any(i >= len(header.labels) for i in sel):
        return None
    return EdfFile(path, header, dict(zip(names, sel, strict=True)), applied)


def edf_tals(edf: EdfFile) -> np.ndarray:
    """The bytes of the first annotation signal, one row per data record.

    Read here because MNE reads EDF+D as if its records were back to back, and crops
    the annotations to the data so laid out (those past its end would be lost).
    """
    header = edf.header
    signal = header.annotation_signals[0]
    start = sum(header.n_samps[:signal]) * header.sample_bytes
    width = header.n_samps[signal] * header.sample_bytes
    records = np.memmap(
        edf.path,
        dtype=np.uint8,
        mode="r",
        offset=header.header_bytes,
        shape=(header.n_records, header.record_bytes),
    )
    try:
        return np.array(records[:, start : start + width])
    finally:
        del records


def record_onsets(tals: np.ndarray) -> np.ndarray:
    """Start of each data record (s, file clock): the onset of its first TAL.

    Raises
    ------
    ValueError
        A record that does not begin with its time-keeping annotation.
    """
    onsets = np.empty(tals.shape[0])
    for r, row in enumerate(tals):
        match = _TAL.match(row.tobytes())
        if match is None:
            raise ValueError(f"data record {r + 1} does not start with its time stamp")
        onsets[r] = float(match.group(1))
    return onsets


def tal_annotations(tals: np.ndarray, origin: float) -> tuple[Annotation, ...]:
    """All annotations in the TAL bytes, onsets in seconds from ``origin`` (file clock)."""
    found: list[Annotation] = []
    seen: set[tuple[float, float, str]] = set()
    for match in _TAL.finditer(tals.tobytes()):
        onset = float(match.group(1)) - origin
        duration = float(match.group(2)) if match.group(2) else 0.0
        for text in match.group(3).split(b"\x14"):
            if not text:
                continue  # a record's time-keeping annotation
            description = text.decode("utf-8", errors="replace")
            key = (onset, duration, description)
            if key not in seen:  # a writer may repeat one in each record it spans
                seen.add(key)
                found.append(Annotation(onset, duration, description))
    return tuple(sorted(found, key=lambda a: a.onset))


@dataclass(frozen=True)
class Layout:
    """Where an EDF+D file's data records go on a continuous time axis."""

    starts: np.ndarray  # first sample of each record on the continuous axis
    per_record: int  # samples per record (at MNE's rate)
    n_times: int  # length of the continuous axis
    annotations: tuple[Annotation, ...]


def discontinuous_layout(edf: EdfFile, n_times: int, sfreq: float) -> Layout:
    """Lay an EDF+D/BDF+D file's records out on a continuous axis, gaps between them.

    Parameters
    ----------
    edf : EdfFile
        The file, discontinuous (:attr:`EdfHeader.discontinuous`).
    n_times : int
        Samples per signal MNE read, its records back to back (at MNE's rate).
    sfreq : float
        MNE's rate, Hz.

    Returns
    -------
    Layout
        Where each record goes, and every annotation on the file's own clock.

    Raises
    ------
    ValueError
        No annotation signal, a record without its time stamp, records out of order or
        overlapping: the file is damaged.
    OSError
        The file cannot be read.
    """
    header = edf.header
    if not header.annotation_signals:
        raise ValueError("it has no annotation signal to time its records by")
    if header.n_records == 0 or n_times % header.n_records:
        raise ValueError(f"{n_times} samples do not split into {header.n_records} data records")
    per_record = n_times // header.n_records
    tals = edf_tals(edf)
    onsets = record_onsets(tals)
    starts = np.round((onsets - onsets[0]) * sfreq).astype(np.int64)
    steps = np.diff(starts)
    if (steps < per_record).any():
        r = int(np.flatnonzero(steps < per_record)[0]) + 1
        raise ValueError(
            f"data record {r + 1} starts at {onsets[r]:g} s, before record {r} "
            f"ends ({onsets[r - 1] + header.record_s:g} s)"
        )
    return Layout(
        starts=starts,
        per_record=per_record,
        n_times=int(starts[-1]) + per_record,
        annotations=tal_annotations(tals, onsets[0]),
    )


def lay_out(data: np.ndarray, layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """Records back to back -> on their time axis; returns it and where samples were."""
    index = (layout.starts[:, np.newaxis] + np.arange(layout.per_record)).ravel()
    out = np.full((data.shape[0], layout.n_times), np.nan)
    out[:, index] = data
    recorded = np.zeros(layout.n_times, dtype=bool)
    recorded[index] = True
    return out, recorded
