"""Recorded EEG as a :class:`~hal.base.SignalSource`: any file MNE reads, loaded once.

A recording is opened with :func:`mne.io.read_raw`, only the channels the run needs are
loaded, and they are resampled once to the device rate; :meth:`RecordingSource.read` is
then a slice of an in-memory ``float64`` array, so replaying a night costs nothing per
block. Every way a recording can be unusable (missing, unreadable, truncated, too short,
sampled too slowly, wrong channel name, stored in a unit its header misnames) ends in a
one-line :class:`~hal.base.UserInputError` that names the file and says what to do.

EDF/BDF headers are also read here, for what MNE leaves out or keeps private: units
written in another case or in UTF-8, each signal's own rate, and EDF+D/BDF+D files,
whose data records are laid out on their own clock with the gaps between them as NaN.

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
from dataclasses import replace
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
from hal.edf import (
    EdfFile,
    discontinuous_layout,
    edf_file,
    lay_out,
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
OPTION_KEYS: tuple[str, ...] = (
    "channel", "eog", "emg", "ecg", "sfreq", "min_sfreq", "units",
)  # fmt: skip

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


def _as_unit(value: object) -> float | None:
    """``units``: volts per stored number (``"uV"`` -> 1e-6), None when not given."""
    if value is None:
        return None
    factor = _unit_factor(value) if isinstance(value, str) else None
    if factor is None:
        raise UserInputError(
            f"Invalid value for the 'units' option: expected V, mV, uV or nV, got {value!r}."
        )
    return factor


def _allow_rate(rate: float) -> str:
    """How to let a recording sampled at ``rate`` in, every way it can be said."""
    return (
        f"To load it anyway pass --min-sfreq {rate:g} (slumbersync), min_sfreq={rate:g} "
        f"(Python) or ?min_sfreq={rate:g} in the source URL."
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
def mne_errors(what: str | Path, action: str = "read", *, file: bool = False) -> Iterator[None]:
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
    file : bool
        ``what`` is a recording's file: an error that is not the system's (a missing
        permission...) says the file looks damaged or is not a recording, then MNE's
        reason, which alone is often a bare Python error ("AssertionError").

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
            reason = _reason(err)
            if file and not (isinstance(err, OSError) and err.errno is not None):
                reason = (
                    f"the file looks damaged or truncated, or is not a recording MNE reads "
                    f"({reason})"
                )
            raise UserInputError(f"Cannot {action} {what}: {reason}") from err
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
    if path.is_file() and path.stat().st_size == 0:
        raise UserInputError(f"Cannot read {path}: the file is empty (0 bytes).")
    with mne_errors(path, file=True):
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


def _find_aux(
    role: str, names: Sequence[str], types: Sequence[str], used: set[str], bads: set[str]
) -> str | None:
    """First channel for ``role`` not marked bad: by MNE's channel type, else by name."""
    for name, kind in zip(names, types, strict=True):
        if kind == role and name not in used and name not in bads:
            return name
    patterns, exclude = _ROLE_PATTERNS[role]
    for pattern in patterns:
        for name, kind in zip(names, types, strict=True):
            if name in used or name in bads or kind in ("stim", "syst"):
                continue
            if exclude and exclude.search(name):
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
    """Decide the rows: the EEG channel(s), then eog, emg and ecg when present.

    Channels the recording marks bad (``info["bads"]``) are never chosen by default; one
    named explicitly is used, with a warning.
    """
    names = list(raw.ch_names)
    types = list(raw.get_channel_types())
    bads = set(raw.info["bads"])
    if channel is None:
        candidates = [
            n for n, t in zip(names, types, strict=True) if t == "eeg" and not _NOT_EEG.search(n)
        ]
        good = [n for n in candidates if n not in bads]
        if not good:
            marked = (
                f" ({', '.join(repr(n) for n in candidates)} marked bad: name one with "
                f"channel=NAME to use it anyway)"
                if candidates
                else ""
            )
            raise UserInputError(
                f"No EEG channel found in {where}{marked}: pass channel=NAME. Available "
                f"channels: {', '.join(repr(n) for n in names)}."
            )
        eeg = [good[0]]
        logger.info(
            "%s: no channel given, using EEG channel %r (the first one%s; pass channel=NAME "
            "to choose another)",
            where,
            eeg[0],
            " not marked bad" if len(good) < len(candidates) else "",
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
            found = _find_aux(role, names, types, used, bads)
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
    named_bad = [s.name for s in specs if s.name in bads]
    if named_bad:
        logger.warning(
            "%s: channel(s) %s are marked bad in the recording; used as asked",
            where,
            ", ".join(named_bad),
        )
    logger.info(
        "%s: channels %s",
        where,
        ", ".join(f"{s.name} ({s.role})" for s in specs),
    )
    return specs


def _check_rates(
    specs: Sequence[ChannelSpec], edf: EdfFile | None, orig: float, lowest: float, where: str
) -> dict[str, float]:
    """Each picked channel's own recording rate; an EEG channel below ``lowest`` is refused.

    An EDF/BDF file may store each signal at its own rate; MNE upsamples the slower ones
    to the fastest, so ``raw.info["sfreq"]`` says nothing of them. A slow auxiliary
    channel is kept (it may still show eye movements or the heart), with a warning.

    Returns
    -------
    dict
        Channel name -> rate in Hz it was recorded at.
    """
    rates = {s.name: orig if edf is None else edf.rate(s.name) for s in specs}
    for spec in specs:
        rate = rates[spec.name]
        if not 0 < rate < orig:
            rates[spec.name] = orig  # a header that makes no sense here: MNE's rate
            continue
        if spec.role == "eeg" and rate < lowest:
            raise UserInputError(
                f"Channel {spec.name} in {where} is sampled at {rate:g} Hz (the file's "
                f"fastest channel at {orig:g} Hz), below min_sfreq={lowest:g} Hz: it holds "
                f"nothing above {rate / 2:g} Hz. {_allow_rate(rate)}"
            )
        log = logger.warning if rate < lowest else logger.info
        log(
            "%s: channel %s (%s) was recorded at %g Hz, slower than the file's %g Hz: it "
            "holds nothing above %g Hz",
            where,
            spec.name,
            spec.role,
            rate,
            orig,
            rate / 2,
        )
    return rates


def _warn_continuation(raw: mne.io.BaseRaw, where: str) -> None:
    """Warn when a FIF file is a later part of a split recording, opened on its own.

    MNE follows a split recording forward from the part it is given, never back: a
    later part opened alone starts partway through the night.
    """
    files = getattr(raw, "filenames", ())
    if not files or files[0] is None or not str(files[0]).lower().endswith((".fif", ".fif.gz")):
        return
    path = Path(files[0])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MNE read this file already and said its piece
            continuation = _is_fif_continuation(path)
    except Exception as err:  # noqa: BLE001 - only a warning hangs on it
        logger.debug("%s: could not read the FIF file's references: %s", where, err)
        return
    if continuation:
        logger.warning(
            "%s is a continuation part of a split FIF recording: the recording starts "
            "earlier, in a previous part; pass the first part to replay all of it",
            where,
        )


def _is_fif_continuation(path: Path) -> bool:
    """Whether a FIF file refers to a previous file of a split recording."""
    # Private: MNE's FIF tree reader; MNE writes a reference to the previous part in
    # every part after the first (FIFFV_ROLE_PREV_FILE), which it reads nowhere public.
    from mne._fiff.open import fiff_open
    from mne._fiff.tag import read_tag
    from mne._fiff.tree import dir_tree_find
    from mne.io.constants import FIFF

    fid, tree, _ = fiff_open(path, verbose=_MNE_VERBOSE)
    with fid:
        for block in dir_tree_find(tree, FIFF.FIFFB_REF):
            for ent in block["directory"]:
                if ent.kind == FIFF.FIFF_REF_ROLE:
                    role = int(read_tag(fid, ent.pos).data.item())
                    if role == FIFF.FIFFV_ROLE_PREV_FILE:
                        return True
    return False


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

    Each row's offset (the median of its good samples) is taken out before and put back
    after: the polyphase filter's DC gain differs slightly from phase to phase, so an
    electrode offset of tens of millivolts would otherwise come out as a ripple of tens
    of microvolts at a harmonic of the rates' common divisor (50 Hz for 100 -> 250 Hz).

    The output holds ``round(n_in * new / orig)`` samples: the recording's duration, to
    within half a sample, whatever ``up/down`` approximates the ratio of the rates by.
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
    n_out = round(n_in * new / orig)
    offsets = np.zeros((data.shape[0], 1))
    for row in range(data.shape[0]):
        good = data[row][~bad[row]]
        if good.size:
            # A subsample's median is typical enough, and cheap on a night.
            offsets[row, 0] = np.median(good[:: max(1, good.size // 100_000)])
    # Enough input for n_out outputs (up/down may be a hair below new/orig), padded to a
    # multiple of down so the resampler's output lines up with the input's first sample.
    n_need = max(n_in, -(-n_out * down // up) + 1)
    pad = n_need - n_in + (-n_need % down)
    centred = data - offsets
    if pad:
        mode = "reflect" if pad < n_in else "edge"
        centred = np.pad(centred, ((0, 0), (0, pad)), mode=mode)
    with mne_errors(where, "resample"):
        out = mne.filter.resample(
            centred, up=up, down=down, method="polyphase", verbose=_MNE_VERBOSE
        )
    # Keep the output samples whose time lies inside the recording.
    out = out[:, :n_out] + offsets
    out_bad = np.zeros((data.shape[0], n_out), dtype=bool)
    for row in np.flatnonzero(bad.any(axis=1)):
        out_bad[row] = missing_after_resampling(bad[row], n_out, up, down)
    return out, out_bad


def missing_after_resampling(bad: np.ndarray, n_out: int, up: int, down: int) -> np.ndarray:
    """Which samples of a signal resampled by ``up/down`` have no value behind them.

    Gaps are filled before resampling (so that the filter does not spread NaN); an output
    sample is missing again when either input sample around its time was.

    Parameters
    ----------
    bad : ndarray of bool, shape (n_in,)
        Input samples without a value.
    n_out : int
        Output samples.
    up, down : int
        The resampling factors.

    Returns
    -------
    ndarray of bool, shape (n_out,)
    """
    t = np.arange(n_out, dtype=np.int64) * down
    lo = np.minimum(t // up, bad.size - 1)
    hi = np.minimum(-(-t // up), bad.size - 1)
    return bad[lo] | bad[hi]


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
        units: str | None = None,
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
            channel and that is not marked bad (logged at INFO).
        eog, emg, ecg : str or bool, optional
            The auxiliary channel for each role: ``None`` (default) finds the first by
            MNE channel type or by name (EOG/E1/E2/LOC/ROC; Chin/EMG; ECG/EKG), a name
            forces one, ``"none"`` or ``False`` leaves the role out.
        min_sfreq : float, optional
            Lowest rate accepted for an EEG channel (default :data:`DEFAULT_MIN_SFREQ`).
        units : str, optional
            The unit of the numbers stored for the picked channels (``V``, ``mV``,
            ``uV``, ``nV``), whatever the file's header says: for files whose header
            names no unit or a wrong one. Default: the header's.

        Returns
        -------
        RecordingSource
            Rows: the EEG channel(s), then eog, emg, ecg (those present), in volts.

        Raises
        ------
        UserInputError
            An EEG channel sampled below ``min_sfreq``, shorter than one 30-s epoch,
            wrong channel name, a channel without a single finite sample or with an
            amplitude no biosignal has (a wrong unit), or MNE failing to load the data.
        """
        device_sfreq = _as_float(
            "sfreq", DEFAULT_SFREQ if sfreq is None else sfreq, minimum=0.0, strict=True
        )
        lowest = _as_float(
            "min_sfreq", DEFAULT_MIN_SFREQ if min_sfreq is None else min_sfreq,
            minimum=0.0, strict=False,
        )  # fmt: skip
        forced_unit = _as_unit(units)
        orig = float(raw.info["sfreq"])
        if orig < lowest:
            raise UserInputError(
                f"{description} is sampled at {orig:g} Hz, below min_sfreq={lowest:g} Hz: it "
                f"holds nothing above {orig / 2:g} Hz. {_allow_rate(orig)}"
            )
        # Before any pick: the header's signals are matched to MNE's channels by index.
        edf = edf_file(raw)
        layout = None
        if edf is not None and edf.header.discontinuous:
            kind = edf.header.reserved[:5].upper()
            try:
                layout = discontinuous_layout(edf, raw.n_times, orig)
            except (OSError, ValueError) as err:
                raise UserInputError(
                    f"Cannot read {description}: a damaged {kind} (discontinuous) file: "
                    f"{_reason(err)}."
                ) from err
        n_times = raw.n_times if layout is None else layout.n_times
        duration = n_times / orig
        # Within half a sample: a rate stored in single precision (FIF) may put exactly
        # 30 s a hair below.
        if duration < EPOCH_S - 0.5 / orig:
            raise UserInputError(
                f"{description} lasts {duration:g} s, shorter than one {EPOCH_S:g}-s epoch: "
                f"nothing can be staged in it."
            )
        _warn_continuation(raw, description)
        specs = _pick_channels(raw, description, channel, {"eog": eog, "emg": emg, "ecg": ecg})
        names = [s.name for s in specs]
        rates = _check_rates(specs, edf, orig, lowest, description)
        _warn_units(raw, names, description)
        if forced_unit is None:
            fixes = _edf_unit_fixes(edf, names, description)
        else:
            fixes = {n: forced_unit / _applied_factor(raw, edf, n) for n in names}
            logger.info(
                "%s: channel(s) %s read as %s (units=%s), whatever the file's header says",
                description,
                ", ".join(names),
                _UNIT_NAMES[forced_unit],
                units,
            )
        # Volts per number stored in the file, and the unit the file gives: for messages.
        per_number = {n: _applied_factor(raw, edf, n) * fixes.get(n, 1.0) for n in names}
        stated = {n: _stated_unit(raw, edf, n) for n in names}

        annotations = _annotations(raw) if layout is None else layout.annotations
        meas_date = raw.info["meas_date"]
        start_posix = None if meas_date is None else meas_date.timestamp() + raw.first_time

        with mne_errors(description, "load", file=True):
            raw.pick(names)
            raw.load_data(verbose=_MNE_VERBOSE)
            data = raw.get_data(picks=names)
        data = np.asarray(data, dtype=np.float64)
        for row, name in enumerate(names):
            if name in fixes:
                data[row] *= fixes[name]
        _check_amplitude(data, orig, names, description, per_number, stated, units)
        if layout is not None:
            data, recorded = lay_out(data, layout)
            _log_gaps(recorded, orig, description, edf.header.reserved[:5].upper())
        else:
            recorded = None
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
            # The gaps between an EDF+D file's records were logged as such.
            in_file = counts if recorded is None else (bad & recorded).sum(axis=1)
            if in_file.any():
                logger.warning(
                    "%s: %d non-finite samples (NaN/Inf) returned as NaN (%s)",
                    description,
                    int(in_file.sum()),
                    ", ".join(f"{n}: {c}" for n, c in zip(names, in_file, strict=True) if c),
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

        # Resampling up adds samples, not frequencies: nothing above the old Nyquist. A
        # channel recorded slower than the file's fastest (EDF) holds even less: each
        # channel says its own band, the source the band every channel holds.
        specs = [
            replace(s, bandwidth_hz=rates[s.name] / 2 if rates[s.name] < device_sfreq else None)
            for s in specs
        ]
        slowest = min(rates.values())
        info = SourceInfo(
            sfreq=device_sfreq,
            channels=tuple(specs),
            n_samples=int(data.shape[1]),
            description=description,
            annotations=annotations,
            meas_date=start_posix,
            bandwidth_hz=slowest / 2 if slowest < device_sfreq else None,
        )
        logger.info(
            "%s: %d channel(s), %.1f s at %g Hz (recorded at %s), %d annotation(s)",
            description,
            len(specs),
            info.duration,
            device_sfreq,
            ", ".join(sorted({f"{r:g} Hz" for r in rates.values()})),
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


# Multipliers to volts for physical dimensions, compared without case.
_UNIT_FACTORS = {"v": 1.0, "mv": 1e-3, "uv": 1e-6, "\u00b5v": 1e-6, "\u03bcv": 1e-6, "nv": 1e-9}
_UNIT_NAMES = {1.0: "V", 1e-3: "mV", 1e-6: "uV", 1e-9: "nV"}

#: A biosignal whose median absolute deviation exceeds this (volts) was almost surely
#: stored in microvolts under a unit MNE took for volts.
IMPLAUSIBLE_V = 5e-3


def _unit_factor(unit: str) -> float | None:
    """Volts per unit of a physical dimension (``"uV"``, ``"MV"``...), None if unknown."""
    return _UNIT_FACTORS.get(unit.strip().lower())


def _edf_unit_fixes(edf: EdfFile | None, names: Sequence[str], where: str) -> dict[str, float]:
    """Factors that put EDF/BDF channels MNE scaled wrongly into volts.

    MNE matches the physical dimension with its case (``uV``, ``mV``) and reads it as
    latin-1: files that write ``UV`` or ``MV`` (the DREAMS recordings do), or the micro
    sign in UTF-8, come back in microvolts labelled as volts. The factor MNE applied is
    compared with the one the header means. Signals are matched by their index in the
    header, so duplicate labels (renamed by MNE) are fixed too.
    """
    if edf is None or edf.applied is None:
        return {}
    fixes: dict[str, float] = {}
    for name in names:
        unit = edf.header.units[edf.index[name]]
        wanted = _unit_factor(unit)
        done = edf.applied.get(name)
        if wanted is None or done is None or done == 0 or math.isclose(done, wanted):
            continue
        fixes[name] = wanted / done
        logger.info(
            "%s: channel %s has unit %r in its header, read as %s",
            where,
            name,
            unit,
            _UNIT_NAMES[wanted],
        )
    return fixes


def _applied_factor(raw: mne.io.BaseRaw, edf: EdfFile | None, name: str) -> float:
    """The multiplier to volts MNE applied to ``name``'s numbers in the file (1 if unknown)."""
    if edf is not None and edf.applied is not None:
        return edf.applied[name]
    # Private, set by the readers of files with units (BrainVision, EEGLAB...): the unit
    # MNE converted from. FIF, and formats without it, store volts.
    orig_units = getattr(raw, "_orig_units", None) or {}
    unit = orig_units.get(name) if isinstance(orig_units, Mapping) else None
    factor = _unit_factor(unit) if isinstance(unit, str) else None
    return factor if factor is not None else 1.0


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


def _stated_unit(raw: mne.io.BaseRaw, edf: EdfFile | None, name: str) -> str:
    """The unit the file states for ``name`` (``""`` when it states none), for messages."""
    if edf is not None:
        return edf.header.units[edf.index[name]]
    orig_units = getattr(raw, "_orig_units", None) or {}
    unit = orig_units.get(name) if isinstance(orig_units, Mapping) else None
    return unit if isinstance(unit, str) else "V"


def _log_gaps(recorded: np.ndarray, sfreq: float, where: str, kind: str) -> None:
    """Log the gaps between a discontinuous file's records (how many, how long)."""
    edges = np.diff(np.concatenate(([1], recorded.astype(np.int8), [1])))
    starts, stops = np.flatnonzero(edges == -1), np.flatnonzero(edges == 1)
    if not starts.size:
        logger.info("%s: %s (discontinuous) file without gaps between its records", where, kind)
        return
    lengths = (stops - starts) / sfreq
    longest = int(np.argmax(lengths))
    logger.warning(
        "%s: %s (discontinuous) file: %d gap(s) between its data records, %.1f s in all "
        "(longest %.1f s at %.1f s), replayed as missing signal (NaN) so that every sample "
        "and annotation keeps its time",
        where,
        kind,
        starts.size,
        float(lengths.sum()),
        float(lengths[longest]),
        starts[longest] / sfreq,
    )


def _typical_amplitude(x: np.ndarray, sfreq: float) -> float:
    """Median over 1-s windows of each window's median absolute deviation (volts).

    Within a second an electrode's offset and its drift barely move: a DC-coupled
    recording drifting over 150 mV still shows the microvolts of the signal, while one
    stored in microvolts but read as volts shows tens of volts in every window.
    """
    width = max(8, round(sfreq))
    n_win = x.size // width
    if n_win == 0:
        finite = x[np.isfinite(x)]
        return float(np.median(np.abs(finite - np.median(finite)))) if finite.size else 0.0
    # A thousand windows spread over the night are plenty for a median, and cheap.
    chosen = np.unique(np.linspace(0, n_win - 1, min(n_win, 1000)).astype(np.int64))
    windows = x[: n_win * width].reshape(n_win, width)[chosen]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows: a gap
        dev = np.nanmedian(np.abs(windows - np.nanmedian(windows, axis=1, keepdims=True)), axis=1)
    dev = dev[np.isfinite(dev)]
    return float(np.median(dev)) if dev.size else 0.0


#: A typical amplitude the unit suggestions aim for (volts): sleep EEG's tens of uV.
_TYPICAL_V = 20e-6


def _check_amplitude(
    data: np.ndarray,
    sfreq: float,
    names: Sequence[str],
    where: str,
    per_number: Mapping[str, float],
    stated: Mapping[str, str],
    forced: str | None,
) -> None:
    """Refuse a channel whose typical amplitude is impossible for a biosignal.

    Such a channel was stored in another unit than the file says (microvolts under no
    unit, or under one MNE took for volts): replayed, it would clip the whole night.

    Parameters
    ----------
    data : ndarray
        The picked channels in volts, as read.
    sfreq : float
        Their rate in Hz.
    names : sequence of str
        Their names.
    where : str
        The recording, for the message.
    per_number : mapping
        Volts per number stored in the file, per channel, as read.
    stated : mapping
        The unit the file states per channel.
    forced : str or None
        The ``units`` option, when given.

    Raises
    ------
    UserInputError
        The first such channel, what was found, and the ``units`` option that fixes it.
    """
    for row, name in enumerate(names):
        spread = _typical_amplitude(data[row], sfreq)
        if spread <= IMPLAUSIBLE_V:
            continue
        numbers = spread / per_number[name]
        guess = min((1e-3, 1e-6, 1e-9), key=lambda f: abs(math.log10(numbers * f / _TYPICAL_V)))
        if forced is not None:
            found = f"read with units={forced}"
        else:
            found = f"unit {stated[name]!r} in the file" if stated[name] else "no unit in the file"
        if numbers * guess > IMPLAUSIBLE_V:
            fix = "no unit (V, mV, uV, nV) makes it plausible: check how the file was written."
        else:
            unit = _UNIT_NAMES[guess]
            fix = (
                f"if the numbers are in {unit}, add units={unit} to the source "
                f"({_spec_hint(where)}?units={unit}) or pass units={unit!r} (Python)."
            )
        raise UserInputError(
            f"Channel {name} in {where} has a typical amplitude of {spread:.3g} V ({found}), "
            f"impossible for a biosignal: the unit is wrong; {fix}"
        )


def _spec_hint(where: str) -> str:
    """The source spec a user would add an option to (a file:// URL for a file)."""
    path = Path(where)
    return path.resolve().as_uri() if path.is_absolute() or path.exists() else where
