"""Recorded EEG as a :class:`~hal.base.SignalSource`: any file MNE reads, loaded once.

A recording is opened with :func:`mne.io.read_raw`, only the channels the run needs are
loaded, and they are resampled once to the device rate; :meth:`RecordingSource.read` is
then a slice of an in-memory ``float64`` array, so replaying a night costs nothing per
block. Every way a recording can be unusable (missing, unreadable, truncated, too short,
sampled too slowly, wrong channel name) ends in a one-line
:class:`~hal.base.UserInputError` that names the file and says what to do.

The ``file://``, ``sleep-physionet://`` and ``mne-sample://`` backends share this module:
they find a file, then call :func:`read_raw` and :meth:`RecordingSource.from_raw`.
"""

from __future__ import annotations

import difflib
import logging
import math
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import numba
import numpy as np

from hal.base import (
    DEFAULT_SFREQ,
    Annotation,
    ChannelSpec,
    SourceInfo,
    UserInputError,
    check_option,
)

if TYPE_CHECKING:
    import mne

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MIN_SFREQ",
    "EPOCH_S",
    "OPTION_KEYS",
    "RecordingSource",
    "mne_data_folder",
    "mne_errors",
    "read_raw",
    "recording_options",
]

#: Lowest recording rate accepted unless the caller lowers it (``min_sfreq=``): below it
#: upsampling to the device rate cannot bring back spindles (11-16 Hz) or EMG power.
DEFAULT_MIN_SFREQ = 100.0

#: One scoring epoch (AASM): a recording shorter than this cannot be staged at all.
EPOCH_S = 30.0

#: Options a recording source takes, as keywords or in the URL's query string.
OPTION_KEYS: tuple[str, ...] = ("channel", "eog", "emg", "ecg", "sfreq", "min_sfreq")

#: A stretch is "flat" when its standard deviation stays below this (volts) ...
FLAT_STD_V = 0.1e-6
#: ... for at least this long (seconds).
FLAT_MIN_S = 1.0

# MNE logs at WARNING only: its INFO chatter (reading headers, filter design) is noise in a
# simulator log, but its warnings are caught and re-logged by ``mne_errors``.
_MNE_VERBOSE = "WARNING"

# Extensions of recordings that are folders (CTF .ds, EGI .mff, MEF3 .mefd).
_FOLDER_FORMATS = (".ds", ".mff", ".mefd")

# Used only if MNE's private table of readers moves; the list a user sees in an error.
_FALLBACK_FORMATS = (
    ".bdf", ".cnt", ".con", ".ds", ".edf", ".eeg", ".fif", ".fif.gz", ".gdf", ".mat",
    ".mff", ".nxe", ".set", ".snirf", ".sqd", ".vhdr",
)  # fmt: skip

# Rational resampling factors: denominators tried in turn until the rate error is below
# _RATE_TOL. The polyphase filter has 20 * max(up, down) taps, so larger ones cost time.
_MAX_DENOMINATORS = (1024, 8192)
_RATE_TOL = 1e-6

# Names that say a channel is not scalp EEG even when MNE types it "eeg" (EDF does so for
# every channel): eye, muscle, heart, breathing, oximetry, position, sound, markers.
_NOT_EEG = re.compile(
    r"eog|emg|ecg|ekg|\b(e1|e2|loc|roc)\b|chin|submental|resp|flow|nasal|\bnaf|oral|thor|"
    r"abd|\bvab|\bvth|chest|effort|belt|sao2|spo2|\bsat|pulse|\bpr\b|\bhr\b|pleth|heart|"
    r"snor|phono|\bmic|\bpos|light|\blux|temp|hypno|event|status|stim|trig|mark|annot|"
    r"\bleg|tib|accel|\bacc|gyro|\bbatt|\bdc\d|cpap|press|\bsum\b",
    re.IGNORECASE,
)

# How to recognise the auxiliary channels by name, best pattern first; a name matching
# the role's "exclude" pattern is never taken (leg EMG is not the chin EMG staging needs).
_ROLE_PATTERNS: dict[str, tuple[tuple[re.Pattern[str], ...], re.Pattern[str] | None]] = {
    "eog": (
        (re.compile(r"eog", re.I), re.compile(r"\b(e1|e2|loc|roc)\b", re.I)),
        None,
    ),
    "emg": (
        (re.compile(r"chin|submental|mental", re.I), re.compile(r"emg", re.I)),
        re.compile(r"\bleg|tib|arm|\blat\b|\brat\b|intercost|diaph", re.I),
    ),
    "ecg": ((re.compile(r"ecg|ekg", re.I),), None),
}

_AUX_ROLES = ("eog", "emg", "ecg")


# --------------------------------------------------------------------------------------
# Options


def recording_options(
    query: str,
    options: Mapping[str, object],
    *,
    where: str = "the URL",
    extra_keys: Sequence[str] = (),
) -> dict[str, Any]:
    """Merge a URL query string with keyword options; keywords win.

    Parameters
    ----------
    query : str
        The query part of the URL (``"channel=C3-A1&sfreq=250"``), possibly empty.
    options : mapping
        Keyword options. A value of ``None`` means "not given"; keys that are not
        recording options are ignored (a generic caller may pass options meant for
        other backends) and logged at DEBUG.
    where : str
        How to name the URL in error messages.
    extra_keys : sequence of str
        Further keys a backend accepts besides :data:`OPTION_KEYS`.

    Returns
    -------
    dict
        The options that were given, as strings (from the query) or as passed.

    Raises
    ------
    UserInputError
        An unknown or repeated key in the query string.
    """
    allowed = (*OPTION_KEYS, *extra_keys)
    merged: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        check_option(f"option in {where}", key, allowed)
        if key in merged:
            raise UserInputError(f"Option {key!r} is given twice in {where}.")
        merged[key] = value
    for key, value in options.items():
        if key in allowed:
            if value is not None:
                merged[key] = value
        else:
            logger.debug("ignoring option %s=%r: recording sources do not use it", key, value)
    return merged


def _as_float(name: str, value: object, *, minimum: float, strict: bool) -> float:
    """Read a rate option given as a number or a query-string text."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UserInputError(
            f"Invalid value for the {name!r} option: expected a number, got {value!r}."
        ) from None
    if not math.isfinite(number) or number < minimum or (strict and number == minimum):
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise UserInputError(
            f"Invalid value for the {name!r} option: expected a number {bound}, got {value!r}."
        )
    return number


def _as_names(value: object) -> list[str]:
    """``channel`` as a list: ``"C3-A1,C4-A2"`` or a list of names."""
    if isinstance(value, str):
        names = [part.strip() for part in value.split(",")]
    elif isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        names = [v.strip() for v in value]
    else:
        raise UserInputError(
            f"Invalid value for the 'channel' option: expected a name or a comma-separated "
            f"list of names, got {value!r}."
        )
    if not names or any(not n for n in names):
        raise UserInputError(f"Invalid value for the 'channel' option: empty name in {value!r}.")
    if len(set(names)) != len(names):
        raise UserInputError(f"Invalid value for the 'channel' option: {value!r} repeats a name.")
    return names


def _aux_choice(role: str, value: object) -> str | None | bool:
    """``eog``/``emg``/``ecg``: ``None`` -> find one, ``False`` -> none, else the name."""
    if value is None or value is True:
        return None
    if value is False:
        return False
    if isinstance(value, str):
        if value.strip().lower() == "none":
            return False
        if value.strip().lower() == "auto":
            return None
        if value.strip():
            return value.strip()
    raise UserInputError(
        f"Invalid value for the {role!r} option: expected a channel name, 'auto' or 'none', "
        f"got {value!r}."
    )


# --------------------------------------------------------------------------------------
# Reading with MNE


def _supported_formats() -> tuple[str, ...]:
    """Extensions :func:`mne.io.read_raw` reads, from MNE's own table when it is there."""
    try:
        # Private, but it is the list read_raw dispatches on; fall back if it moves.
        from mne.io._read_raw import _get_supported

        return tuple(sorted(_get_supported()))
    except (ImportError, AttributeError):  # pragma: no cover - depends on MNE's layout
        return _FALLBACK_FORMATS


def _extension(path: Path, formats: Sequence[str]) -> str | None:
    """The supported extension ``path`` ends with (longest match, case-insensitive)."""
    name = path.name.lower()
    matches = [ext for ext in formats if name.endswith(ext)]
    return max(matches, key=len) if matches else None


def _reason(err: BaseException) -> str:
    """The first line of an exception's message, short enough for a one-line error."""
    text = str(err).strip()
    if isinstance(err, OSError) and err.strerror:
        text = err.strerror
    line = text.splitlines()[0].strip() if text else ""
    if len(line) > 300:
        line = line[:297] + "..."
    return line or type(err).__name__


_TRUNCATED = "number of records from the header does not match the file size"
_NAMING = "does not conform to mne naming conventions"


@contextmanager
def mne_errors(what: str | Path, action: str = "read") -> Iterator[None]:
    """Run MNE code, turning its exceptions into one-line :class:`UserInputError`.

    MNE's warnings are caught and logged instead of reaching the caller (the test suite
    turns warnings into errors, and a warning on stderr is no use to the simulator's
    user); the one that says an EDF file is shorter than its header declares becomes an
    error, since a truncated night would silently replay a different recording.

    Parameters
    ----------
    what : str or Path
        The file or data set being handled, named in the messages.
    action : str
        Verb for the message (``"read"`` gives ``"Cannot read PATH: reason"``).

    Raises
    ------
    UserInputError
        Whatever MNE raised, with ``what`` and the first line of MNE's reason.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        except UserInputError:
            raise
        except MemoryError:
            raise
        except Exception as err:
            raise UserInputError(f"Cannot {action} {what}: {_reason(err)}") from err
    for item in caught:
        message = str(item.message).strip()
        lowered = message.lower()
        if _TRUNCATED in lowered:
            raise UserInputError(
                f"Cannot {action} {what}: the file is truncated or damaged (its size does not "
                f"match the number of data records its header declares); re-export or repair it."
            )
        if _NAMING in lowered:
            logger.debug("%s: %s", what, message)
        else:
            logger.warning("%s: %s", what, message.splitlines()[0] if message else message)


def mne_data_folder(key: str) -> Path:
    """Where MNE keeps (or would keep) a data set, without creating anything.

    Parameters
    ----------
    key : str
        The data set's MNE config key (``"PHYSIONET_SLEEP_PATH"``,
        ``"MNE_DATASETS_SAMPLE_PATH"``).

    Returns
    -------
    Path
        The folder from the key, else from ``MNE_DATA``, else ``~/mne_data``, as MNE's
        fetchers choose it (they create it on first download; this does not).
    """
    import mne

    folder = mne.get_config(key) or mne.get_config("MNE_DATA") or "~/mne_data"
    return Path(folder).expanduser()


def read_raw(path: str | Path) -> mne.io.BaseRaw:
    """Open a recording lazily with :func:`mne.io.read_raw` (no data loaded yet).

    Parameters
    ----------
    path : str or Path
        A recording in any format MNE reads (EDF, BDF, FIF, BrainVision ``.vhdr``,
        EEGLAB ``.set``, ...).

    Returns
    -------
    mne.io.BaseRaw
        The raw object, not preloaded.

    Raises
    ------
    UserInputError
        Missing path, a folder, an extension MNE does not read, or a file MNE cannot parse.
    """
    import mne

    path = Path(path).expanduser()
    if not path.exists():
        raise UserInputError(f"No such recording: {path}")
    formats = _supported_formats()
    ext = _extension(path, formats)
    if path.is_dir() and ext not in _FOLDER_FORMATS:
        inside = sorted(p.name for p in path.iterdir() if _extension(p, formats))[:5]
        hint = f" Recordings in it: {', '.join(inside)}." if inside else ""
        raise UserInputError(f"{path} is a folder, not a recording: pass a file.{hint}")
    if ext is None or ext in (".vmrk", ".amrk"):
        suffix = "".join(path.suffixes) or "(no extension)"
        raise UserInputError(
            f"Unsupported file type {suffix} for {path}: MNE reads {', '.join(formats)} "
            f"(for BrainVision pass the .vhdr header)."
        )
    if ext == ".eeg" and path.with_suffix(".vhdr").exists():
        # .eeg is Nihon Kohden to MNE; beside a .vhdr it is BrainVision's binary part.
        raise UserInputError(
            f"{path} is the data part of a BrainVision recording: pass "
            f"{path.with_suffix('.vhdr')} instead."
        )
    with mne_errors(path):
        return mne.io.read_raw(path, preload=False, verbose=_MNE_VERBOSE)


# --------------------------------------------------------------------------------------
# Channels


def _check_channel(name: str, available: Sequence[str], where: str) -> None:
    """Raise a one-line error listing the channels when ``name`` is not among them."""
    if name in available:
        return
    lowered = {a.lower(): a for a in available}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1)
    hint = f" Did you mean {lowered[close[0]]!r}?" if close else ""
    shown = ", ".join(repr(a) for a in available[:60])
    if len(available) > 60:
        shown += f", ... ({len(available)} in all)"
    raise UserInputError(
        f"Channel {name!r} not found in {where}. Available channels: {shown}.{hint}"
    )


def _find_aux(role: str, names: Sequence[str], types: Sequence[str], used: set[str]) -> str | None:
    """First channel for ``role``: by MNE's channel type, else by name."""
    for name, kind in zip(names, types, strict=True):
        if kind == role and name not in used:
            return name
    patterns, exclude = _ROLE_PATTERNS[role]
    for pattern in patterns:
        for name, kind in zip(names, types, strict=True):
            if name in used or kind in ("stim", "syst") or (exclude and exclude.search(name)):
                continue
            if pattern.search(name):
                return name
    return None


def _pick_channels(
    raw: mne.io.BaseRaw,
    where: str,
    channel: object,
    aux: Mapping[str, object],
) -> list[ChannelSpec]:
    """Decide the rows: the EEG channel(s), then eog, emg and ecg when present."""
    names = list(raw.ch_names)
    types = list(raw.get_channel_types())
    if channel is None:
        candidates = [
            n for n, t in zip(names, types, strict=True) if t == "eeg" and not _NOT_EEG.search(n)
        ]
        if not candidates:
            raise UserInputError(
                f"No EEG channel found in {where}: pass channel=NAME. Available channels: "
                f"{', '.join(repr(n) for n in names)}."
            )
        eeg = [candidates[0]]
        logger.info(
            "%s: no channel given, using EEG channel %r (the first one; pass channel=NAME "
            "to choose another)",
            where,
            eeg[0],
        )
    else:
        eeg = _as_names(channel)
        for name in eeg:
            _check_channel(name, names, where)
    specs = [ChannelSpec(name, "eeg") for name in eeg]
    used = set(eeg)
    for role in _AUX_ROLES:
        choice = _aux_choice(role, aux.get(role))
        if choice is False:
            continue
        if choice is None:
            found = _find_aux(role, names, types, used)
            if found is None:
                logger.info("%s: no %s channel found", where, role.upper())
                continue
            choice = found
        else:
            _check_channel(choice, names, where)
            if choice in used:
                raise UserInputError(
                    f"Channel {choice!r} in {where} cannot be both {role} and "
                    f"{next(s.role for s in specs if s.name == choice)}."
                )
        specs.append(ChannelSpec(choice, role))
        used.add(choice)
    logger.info(
        "%s: channels %s",
        where,
        ", ".join(f"{s.name} ({s.role})" for s in specs),
    )
    return specs


# --------------------------------------------------------------------------------------
# Signal checks and resampling


def _fill_gaps(data: np.ndarray, bad: np.ndarray) -> None:
    """Replace non-finite samples in place by linear interpolation, for the resampler.

    The filled values never reach the caller: the same samples become NaN again after
    resampling. Interpolation (rather than zeros) keeps the filter from ringing into the
    good samples next to a gap.
    """
    index = np.arange(data.shape[1])
    for row in np.flatnonzero(bad.any(axis=1)):
        good = ~bad[row]
        data[row, ~good] = np.interp(index[~good], index[good], data[row, good])


@numba.njit(cache=True)
def _flat_cover(x: np.ndarray, bad: np.ndarray, width: int, var_max: float) -> tuple[int, int]:
    """Flat stretches of one row: windows of ``width`` samples without a bad sample whose
    variance is below ``var_max``; returns the number of stretches they form and the
    samples they cover.

    Why numba: running sums over every window of a night are a dozen NumPy passes with
    temporaries the size of the recording; this is one pass, and one more to mark coverage.
    """
    n = x.shape[0]
    s1 = 0.0
    s2 = 0.0
    n_bad = 0
    cover_end = -1  # first sample after the last flat window seen (-1: none yet)
    count = 0
    covered = 0
    for i in range(n):
        v = x[i]
        s1 += v
        s2 += v * v
        n_bad += bad[i]
        if i >= width:
            old = x[i - width]
            s1 -= old
            s2 -= old * old
            n_bad -= bad[i - width]
        if i < width - 1:
            continue
        start = i - width + 1
        if n_bad == 0 and s2 / width - (s1 / width) ** 2 < var_max:
            # The window [start, i] is flat: extend the covered stretch or begin one.
            if start > cover_end:
                count += 1
                covered += width
            else:
                covered += i + 1 - cover_end
            cover_end = i + 1
        if i % 4096 == 4095:
            # Running sums drift by rounding: start them afresh from the window.
            s1 = 0.0
            s2 = 0.0
            for j in range(start, i + 1):
                s1 += x[j]
                s2 += x[j] * x[j]
    return count, covered


def _flat_stretches(data: np.ndarray, bad: np.ndarray, sfreq: float) -> list[tuple[int, int]]:
    """Flat stretches (std < FLAT_STD_V over >= FLAT_MIN_S) per row.

    Returns
    -------
    list of (count, samples)
        Per row, the number of flat stretches and their total length in samples.
    """
    width = max(2, int(round(FLAT_MIN_S * sfreq)))
    out: list[tuple[int, int]] = []
    for row in range(data.shape[0]):
        if data.shape[1] < width:
            out.append((0, 0))
            continue
        # A typical value is removed first so the sums of squares do not lose the microvolt
        # variance next to a millivolt offset (a subsample's median is typical enough).
        x = data[row]
        good = x[~bad[row]]
        offset = float(np.median(good[:: max(1, good.size // 10_000)])) if good.size else 0.0
        xs = np.where(bad[row], 0.0, x - offset)
        count, covered = _flat_cover(xs, bad[row], width, FLAT_STD_V**2)
        out.append((int(count), int(covered)))
    return out


def _resample_factors(orig: float, new: float) -> tuple[int, int, float]:
    """Small integers ``up/down`` approximating ``new/orig``, and the relative rate error."""
    ratio = new / orig
    frac = Fraction(ratio)
    for max_den in _MAX_DENOMINATORS:
        frac = Fraction(ratio).limit_denominator(max_den)
        if abs(float(frac) / ratio - 1.0) <= _RATE_TOL:
            break
    return frac.numerator, frac.denominator, float(frac) / ratio - 1.0


def _resample(
    data: np.ndarray, bad: np.ndarray, orig: float, new: float, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """Resample rows from ``orig`` to ``new`` Hz with MNE's polyphase resampler.

    The factors are passed explicitly and the input is padded (by reflection, as the
    resampler pads its edges anyway) to a multiple of ``down``, the surplus output cut
    off: ``raw.resample`` derives the factors from the signal lengths, which for most
    lengths gives factors in the millions and a filter that does not fit in memory.
    """
    import mne

    up, down, error = _resample_factors(orig, new)
    if abs(error) > _RATE_TOL:
        logger.warning(
            "%s: %g Hz -> %g Hz is resampled by %d/%d, which runs %.1f ppm %s (%.1f ms per hour)",
            where,
            orig,
            new,
            up,
            down,
            abs(error) * 1e6,
            "fast" if error > 0 else "slow",
            abs(error) * 3.6e6,
        )
    n_in = data.shape[1]
    pad = -n_in % down
    if pad:
        mode = "reflect" if pad < n_in else "edge"
        data = np.pad(data, ((0, 0), (0, pad)), mode=mode)
    with mne_errors(where, "resample"):
        out = mne.filter.resample(data, up=up, down=down, method="polyphase", verbose=_MNE_VERBOSE)
    # Keep the output samples whose time lies inside the recording.
    n_out = n_in * up // down
    out = out[:, :n_out]
    out_bad = np.zeros((data.shape[0], n_out), dtype=bool)
    if bad.any():
        # An output sample is missing when either input sample around its time is.
        t = np.arange(n_out, dtype=np.int64) * down
        lo = t // up
        hi = np.minimum(-(-t // up), n_in - 1)
        for row in np.flatnonzero(bad.any(axis=1)):
            out_bad[row] = bad[row, lo] | bad[row, hi]
    return out, out_bad


# --------------------------------------------------------------------------------------
# The source


class RecordingSource:
    """A recording replayed at the device rate, held in memory.

    Build one with :meth:`from_path` or :meth:`from_raw` (or through
    ``hal.open_source("file:///night.edf")``); the constructor wraps an array that is
    already at the device rate.

    Parameters
    ----------
    data : ndarray, shape (n_channels, n_samples)
        Samples in volts at ``info.sfreq``; NaN where the recording had no valid value.
    info : SourceInfo
        Rate, channels and roles, length, origin, annotations.
    """

    def __init__(self, data: np.ndarray, info: SourceInfo) -> None:
        data = np.ascontiguousarray(data, dtype=np.float64)
        if data.shape != (len(info.channels), info.n_samples):
            raise ValueError(
                f"data has shape {data.shape}, info describes "
                f"({len(info.channels)}, {info.n_samples})"
            )
        # Reads hand out views of this array: read-only so no caller can alter the night.
        data.setflags(write=False)
        self._data: np.ndarray | None = data
        self.info = info

    @classmethod
    def from_path(cls, path: str | Path, **options: Any) -> RecordingSource:
        """Load a recording file.

        Parameters
        ----------
        path : str or Path
            Any recording :func:`mne.io.read_raw` reads.
        **options
            As :meth:`from_raw`.

        Returns
        -------
        RecordingSource
        """
        raw = read_raw(path)
        return cls.from_raw(raw, description=str(Path(path).expanduser()), **options)

    @classmethod
    def from_raw(
        cls,
        raw: mne.io.BaseRaw,
        *,
        description: str,
        sfreq: float | str | None = None,
        channel: str | Sequence[str] | None = None,
        eog: str | bool | None = None,
        emg: str | bool | None = None,
        ecg: str | bool | None = None,
        min_sfreq: float | str | None = None,
    ) -> RecordingSource:
        """Pick, load and resample the channels of an MNE raw object.

        ``raw`` is consumed: its channels are picked and loaded in place.

        Parameters
        ----------
        raw : mne.io.BaseRaw
            The recording, preloaded or not (only the picked channels are loaded).
        description : str
            The recording's origin (its path), for messages and ``info.description``.
        sfreq : float, optional
            Device rate in Hz; default :data:`hal.base.DEFAULT_SFREQ` (250).
        channel : str or sequence of str, optional
            EEG channel name(s), or a comma-separated list. Default: the first channel
            MNE types as EEG whose name is not that of an EOG/EMG/ECG/respiration/...
            channel (logged at INFO).
        eog, emg, ecg : str or bool, optional
            The auxiliary channel for each role: ``None`` (default) finds the first by
            MNE channel type or by name (EOG/E1/E2/LOC/ROC; Chin/EMG; ECG/EKG), a name
            forces one, ``"none"`` or ``False`` leaves the role out.
        min_sfreq : float, optional
            Lowest recording rate accepted (default :data:`DEFAULT_MIN_SFREQ`).

        Returns
        -------
        RecordingSource
            Rows: the EEG channel(s), then eog, emg, ecg (those present), in volts.

        Raises
        ------
        UserInputError
            Rate below ``min_sfreq``, shorter than one 30-s epoch, wrong channel name,
            a channel without a single finite sample, or MNE failing to load the data.
        """
        device_sfreq = _as_float(
            "sfreq", DEFAULT_SFREQ if sfreq is None else sfreq, minimum=0.0, strict=True
        )
        lowest = _as_float(
            "min_sfreq", DEFAULT_MIN_SFREQ if min_sfreq is None else min_sfreq,
            minimum=0.0, strict=False,
        )  # fmt: skip
        orig = float(raw.info["sfreq"])
        if orig < lowest:
            raise UserInputError(
                f"{description} is sampled at {orig:g} Hz, below min_sfreq={lowest:g} Hz: it "
                f"holds nothing above {orig / 2:g} Hz. To load it anyway pass "
                f"--min-sfreq {orig:g} (slumbersync), min_sfreq={orig:g} (Python) or "
                f"?min_sfreq={orig:g} in the source URL."
            )
        duration = raw.n_times / orig
        if duration < EPOCH_S:
            raise UserInputError(
                f"{description} lasts {duration:g} s, shorter than one {EPOCH_S:g}-s epoch: "
                f"nothing can be staged in it."
            )
        specs = _pick_channels(raw, description, channel, {"eog": eog, "emg": emg, "ecg": ecg})
        names = [s.name for s in specs]
        _warn_units(raw, names, description)
        fixes = _edf_unit_fixes(raw, names, description)

        annotations = _annotations(raw)
        meas_date = raw.info["meas_date"]
        start_posix = None if meas_date is None else meas_date.timestamp() + raw.first_time

        with mne_errors(description, "load"):
            raw.pick(names)
            raw.load_data(verbose=_MNE_VERBOSE)
            data = raw.get_data(picks=names)
        data = np.asarray(data, dtype=np.float64)
        for row, name in enumerate(names):
            if name in fixes:
                data[row] *= fixes[name]
        _check_amplitude(data, names, description)
        _check_roles(data, specs, orig, description)

        bad = ~np.isfinite(data)
        if bad.any():
            counts = bad.sum(axis=1)
            empty = [n for n, c in zip(names, counts, strict=True) if c == data.shape[1]]
            if empty:
                raise UserInputError(
                    f"Channel {empty[0]!r} in {description} contains no finite sample "
                    f"(all NaN/Inf): pick another with channel=/eog=/emg=/ecg=, or 'none'."
                )
            logger.warning(
                "%s: %d non-finite samples (NaN/Inf) returned as NaN (%s)",
                description,
                int(counts.sum()),
                ", ".join(f"{n}: {c}" for n, c in zip(names, counts, strict=True) if c),
            )
            data[bad] = np.nan
            _fill_gaps(data, bad)

        flat = _flat_stretches(data, bad, orig)
        if any(count for count, _ in flat):
            logger.warning(
                "%s: flat stretches (std < %g uV over >= %g s), left as they are: %s",
                description,
                FLAT_STD_V * 1e6,
                FLAT_MIN_S,
                "; ".join(
                    f"{n}: {count} ({total / orig:.1f} s)"
                    for n, (count, total) in zip(names, flat, strict=True)
                    if count
                ),
            )

        if orig != device_sfreq:
            data, bad = _resample(data, bad, orig, device_sfreq, description)
        if bad.any():
            data[bad] = np.nan

        info = SourceInfo(
            sfreq=device_sfreq,
            channels=tuple(specs),
            n_samples=int(data.shape[1]),
            description=description,
            annotations=annotations,
            meas_date=start_posix,
            # Resampling up adds samples, not frequencies: nothing above the old Nyquist.
            bandwidth_hz=orig / 2 if orig < device_sfreq else None,
        )
        logger.info(
            "%s: %d channel(s), %.1f s at %g Hz (recorded at %g Hz), %d annotation(s)",
            description,
            len(specs),
            info.duration,
            device_sfreq,
            orig,
            len(annotations),
        )
        return cls(data, info)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Return samples ``[start, stop)`` in volts, one row per channel.

        Parameters
        ----------
        start, stop : int
            Device sample indices; ``stop`` past the end is clipped to ``n_samples``.

        Returns
        -------
        ndarray, shape (n_channels, n)
            A read-only view of the night in memory (copy it to modify it).
        """
        if self._data is None:
            raise ValueError(f"read from a closed source ({self.info.description})")
        start, stop = int(start), int(stop)
        if start < 0 or stop < start:
            raise ValueError(f"invalid read range [{start}, {stop})")
        return self._data[:, min(start, self.info.n_samples) : min(stop, self.info.n_samples)]

    def close(self) -> None:
        """Drop the samples (idempotent)."""
        self._data = None

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._data is None

    def __enter__(self) -> RecordingSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.info.duration:.1f} s"
        return (
            f"<RecordingSource {self.info.description!r} {','.join(self.info.ch_names)} "
            f"@ {self.info.sfreq:g} Hz, {state}>"
        )


def _annotations(raw: mne.io.BaseRaw) -> tuple[Annotation, ...]:
    """The recording's annotations, onsets in seconds from its first sample."""
    ann = raw.annotations
    # MNE keeps onsets on the acquisition clock, where the first sample is at first_time.
    onsets = np.asarray(ann.onset, dtype=float) - raw.first_time
    return tuple(
        Annotation(float(onset), float(duration), str(description))
        for onset, duration, description in zip(onsets, ann.duration, ann.description, strict=True)
    )


def _warn_units(raw: mne.io.BaseRaw, names: Sequence[str], where: str) -> None:
    """Log channels whose unit is not volts: the device boundary speaks volts only."""
    from mne.io.constants import FIFF

    by_name = {ch["ch_name"]: ch for ch in raw.info["chs"]}
    odd = [n for n in names if by_name[n]["unit"] != FIFF.FIFF_UNIT_V]
    if odd:
        logger.warning(
            "%s: channel(s) %s are not in volts; their values are passed on unscaled",
            where,
            ", ".join(odd),
        )


# Multipliers to volts for EDF/BDF physical dimensions, compared without case.
_UNIT_FACTORS = {"v": 1.0, "mv": 1e-3, "uv": 1e-6, "\u00b5v": 1e-6, "\u03bcv": 1e-6, "nv": 1e-9}

#: A biosignal whose median absolute deviation exceeds this (volts) was almost surely
#: stored in microvolts under a unit MNE took for volts.
IMPLAUSIBLE_V = 5e-3


def _edf_header_units(path: Path) -> dict[str, str]:
    """Physical dimension of each (uniquely labelled) signal in an EDF/BDF header."""
    with open(path, "rb") as fid:
        head = fid.read(256)
        n_signals = int(head[252:256].decode("ascii").strip())
        block = fid.read(256 * n_signals)
    labels = [block[16 * i : 16 * (i + 1)].decode("latin-1").strip() for i in range(n_signals)]
    start = 96 * n_signals
    units = [
        block[start + 8 * i : start + 8 * (i + 1)].decode("latin-1").strip()
        for i in range(n_signals)
    ]
    return {lab: unit for lab, unit in zip(labels, units, strict=True) if labels.count(lab) == 1}


def _edf_unit_fixes(raw: mne.io.BaseRaw, names: Sequence[str], where: str) -> dict[str, float]:
    """Factors that put EDF/BDF channels MNE left unscaled into volts.

    MNE matches the physical dimension with its case (``uV``, ``mV``): files that write
    ``UV`` or ``MV`` (the DREAMS recordings do) come back in microvolts labelled as volts.
    The factor MNE applied is compared with the one the header means, read without case.
    """
    files = getattr(raw, "filenames", ())
    if not files or files[0] is None or Path(files[0]).suffix.lower() not in (".edf", ".bdf"):
        return {}
    try:
        # Private: the multiplier MNE applied per channel. If it moves, trust MNE's scaling.
        extras = raw._raw_extras[0]
        applied = dict(zip(extras["ch_names"], extras["units"], strict=True))
        header = _edf_header_units(Path(files[0]))
    except (AttributeError, IndexError, KeyError, TypeError, ValueError, OSError):
        return {}
    fixes: dict[str, float] = {}
    for name in names:
        unit = header.get(name, "")
        wanted = _UNIT_FACTORS.get(unit.lower())
        done = applied.get(name)
        if wanted is None or done is None or math.isclose(float(done), wanted):
            continue
        fixes[name] = wanted / float(done)
        logger.info(
            "%s: channel %s has unit %r in its header, read as %s",
            where,
            name,
            unit,
            {1.0: "V", 1e-3: "mV", 1e-6: "uV", 1e-9: "nV"}[wanted],
        )
    return fixes


#: How much of a recording the role check looks at (its start), seconds.
ROLE_CHECK_S = 600.0


def heartbeat_regularity(x: np.ndarray, sfreq: float) -> float:
    """How much ``x`` looks like an ECG, 0 (no heartbeat) to 1 (a metronome).

    The energy of the 5-30 Hz band (the R peaks, whatever the lead's polarity), smoothed
    over 60 ms, is autocorrelated in 10-s windows (the heart rate barely moves in 10 s); the
    median over windows of the highest peak at a heart period (0.4-1.5 s) is the score.
    EEG has no such rhythm; an ECG, or EEG with strong ECG pick-up, scores high.
    """
    from scipy import signal

    win = round(10.0 * sfreq)
    if sfreq < 50 or x.size < 2 * win:
        return 0.0
    sos = signal.butter(2, [5.0, min(30.0, 0.45 * sfreq)], "bandpass", fs=sfreq, output="sos")
    y = signal.sosfiltfilt(sos, np.where(np.isfinite(x), x, 0.0))
    k = max(1, round(0.06 * sfreq))
    e = np.convolve(y * y, np.ones(k) / k, mode="same")
    n_win = e.size // win
    seg = e[: n_win * win].reshape(n_win, win)
    seg = seg - seg.mean(axis=1, keepdims=True)
    spec = np.fft.rfft(seg, 2 * win, axis=1)
    ac = np.fft.irfft(spec * np.conj(spec), axis=1)[:, :win]
    power = ac[:, 0]
    ok = power > 0
    if not ok.any():
        return 0.0
    lo, hi = round(0.4 * sfreq), round(1.5 * sfreq)
    peaks = np.zeros(n_win)
    peaks[ok] = ac[ok, lo:hi].max(axis=1) / power[ok]
    # A heartbeat is a train of pulses: the energy spends most of the time far below its
    # peaks. A sine, or alpha, is periodic too but never pulsatile: it does not count.
    raw = e[: n_win * win].reshape(n_win, win)
    med = np.median(raw, axis=1)
    pulsatile = np.percentile(raw, 99, axis=1) > 8.0 * np.maximum(med, 1e-30)
    peaks[~pulsatile] = 0.0
    return float(max(0.0, np.median(peaks)))


def high_frequency_share(x: np.ndarray, sfreq: float) -> float:
    """Share of the 0.5-100 Hz power above 30 Hz: muscle (EMG) is mostly there, EEG not."""
    from scipy import signal

    top = min(100.0, 0.45 * sfreq)
    if top <= 35.0 or x.size < 8 * sfreq:
        return 0.0
    f, p = signal.welch(np.where(np.isfinite(x), x, 0.0), fs=sfreq, nperseg=round(4 * sfreq))
    band = (f >= 0.5) & (f <= top)
    total = float(p[band].sum())
    return float(p[band & (f > 30.0)].sum() / total) if total > 0 else 0.0


def _check_roles(data: np.ndarray, specs: Sequence, sfreq: float, where: str) -> None:
    """Log a channel whose signal does not look like its role (a wrong ``channel=``).

    An EEG channel with a regular heartbeat train is probably an ECG, one with most of its
    power above 30 Hz probably chin EMG; an ECG channel without a heartbeat is probably not
    one. The run goes on (the user may know better); the log says what was seen.
    """
    n = min(data.shape[1], round(ROLE_CHECK_S * sfreq))
    for row, spec in enumerate(specs):
        x = data[row, :n]
        if spec.role == "eeg":
            beat = heartbeat_regularity(x, sfreq)
            hf = high_frequency_share(x, sfreq)
            if beat > 0.6:
                logger.warning(
                    "%s: channel %s is used as EEG but carries a regular heartbeat "
                    "(regularity %.2f): is it an ECG? Pick the EEG with channel=",
                    where,
                    spec.name,
                    beat,
                )
            elif hf > 0.6:
                logger.warning(
                    "%s: channel %s is used as EEG but %.0f%% of its power is above 30 Hz: "
                    "is it chin EMG? Pick the EEG with channel=",
                    where,
                    spec.name,
                    100 * hf,
                )
        elif spec.role == "ecg" and x.size >= 20 * sfreq:
            beat = heartbeat_regularity(x, sfreq)
            if beat < 0.4:
                logger.warning(
                    "%s: channel %s is used as ECG but shows no regular heartbeat "
                    "(regularity %.2f): pick the ECG with ecg= or turn it off with ecg=none",
                    where,
                    spec.name,
                    beat,
                )


def _check_amplitude(data: np.ndarray, names: Sequence[str], where: str) -> None:
    """Log channels whose typical amplitude is impossible for a biosignal in volts."""
    # Every 16th sample is plenty for a median and keeps this cheap on a long night.
    sample = data[:, ::16]
    for row, name in enumerate(names):
        finite = sample[row][np.isfinite(sample[row])]
        if finite.size == 0:
            continue
        spread = float(np.median(np.abs(finite - np.median(finite))))
        if spread > IMPLAUSIBLE_V:
            logger.warning(
                "%s: channel %s has a typical amplitude of %.3g V, impossible for a biosignal: "
                "its unit in the file is probably wrong (stored in uV, read as V?)",
                where,
                name,
                spread,
            )
