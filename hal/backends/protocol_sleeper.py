"""``sleeper://`` backend: the virtual sleeper of :mod:`sim.sleeper`.

Spec: ``sleeper://?seed=1&hours=8&hypnogram=/path/h.csv&artifacts=0&sfreq=250&nightmares=3``.
Every key is optional (``nightmares=N`` plants N nightmares in the night's REM, for tests
and benches; see :class:`sim.sleeper.VirtualSleeper`). Keyword options given to
:func:`open_source` (``seed=``, ``hours=``...) override the query string; keywords whose
value is None count as not given.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from hal.base import DEFAULT_SFREQ, UserInputError
from sim.hypnogram import read_hypnogram
from sim.sleeper import VirtualSleeper, parse_hours

logger = logging.getLogger(__name__)

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _as_int(key: str, value: object) -> int:
    """Parse a non-negative integer."""
    try:
        if isinstance(value, bool):
            raise ValueError
        out = value if isinstance(value, int) else int(str(value).strip())
    except ValueError:
        out = -1
    if out < 0:
        raise UserInputError(
            f"Invalid value for {key!r} in sleeper://: allowed is a non-negative integer, "
            f"got {value!r}."
        )
    return out


def _as_count(key: str, value: object, high: int) -> int:
    """Parse an integer in [0, high]."""
    out = _as_int(key, value)
    if out > high:
        raise UserInputError(
            f"Invalid value for {key!r} in sleeper://: allowed is an integer in [0, {high}], "
            f"got {value!r}."
        )
    return out


def _as_float(key: str, value: object, low: float, high: float, closed: bool, unit: str) -> float:
    """Parse a number in (low, high] (``[low, high]`` when ``closed``)."""
    try:
        if isinstance(value, bool):
            raise ValueError
        out = float(value) if isinstance(value, (int, float)) else float(str(value).strip())
    except ValueError:
        out = float("nan")
    inside = (low <= out if closed else low < out) and out <= high
    if not inside:  # also catches NaN
        bracket = "[" if closed else "("
        raise UserInputError(
            f"Invalid value for {key!r} in sleeper://: allowed is a number in "
            f"{bracket}{low:g}, {high:g}] {unit}, got {value!r}."
        )
    return out


def _as_bool(key: str, value: object) -> bool:
    """Parse a flag (1/0, true/false, yes/no, on/off)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise UserInputError(
        f"Invalid value for {key!r} in sleeper://: allowed are "
        f"{', '.join(_TRUE + _FALSE)}, got {value!r}."
    )


def _as_hypnogram(key: str, value: object) -> list[str]:
    """Read a hypnogram file (or pass a list of stages through)."""
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    path = Path(str(value)).expanduser()
    if not path.is_file():
        raise UserInputError(
            f"Invalid value for {key!r} in sleeper://: allowed is the path of an existing "
            f"hypnogram file (one stage per 30-s epoch), got {str(value)!r}."
        )
    try:
        return read_hypnogram(path)
    except UserInputError as err:
        raise UserInputError(f"Invalid value for {key!r} in sleeper://: {err}") from None


_PARSERS: dict[str, Callable[[str, object], object]] = {
    "seed": _as_int,
    "hours": lambda k, v: parse_hours(v, " in sleeper://"),
    "sfreq": lambda k, v: _as_float(k, v, 100.0, 2000.0, True, "Hz"),
    "artifacts": _as_bool,
    "hypnogram": _as_hypnogram,
    "nightmares": lambda k, v: _as_count(k, v, 100),
}


def parse_spec(url: str, **options: object) -> dict[str, object]:
    """Parse a ``sleeper://`` spec and keyword options into VirtualSleeper arguments.

    Parameters
    ----------
    url : str
        ``sleeper://?seed=1&hours=8&hypnogram=/path/h.csv&artifacts=0&sfreq=250``, plus
        ``nightmares=N`` (0-100).
    **options
        Same keys; they override the query string. None values are ignored.

    Returns
    -------
    dict
        Keyword arguments for :class:`sim.sleeper.VirtualSleeper`.

    Raises
    ------
    UserInputError
        Unknown key, repeated key, bad value, or a host/path in the spec. The one-line
        message names the key, what is allowed and what came.
    """
    parts = urlsplit(url)
    if parts.scheme != "sleeper":
        raise UserInputError(f"Not a sleeper:// spec: {url!r}.")
    if parts.netloc or parts.path.strip("/"):
        raise UserInputError(
            f"sleeper:// takes no host or path, only a query (sleeper://?seed=1&hours=8), "
            f"got {(parts.netloc + parts.path)!r}."
        )
    allowed = ", ".join(_PARSERS)
    given: dict[str, object] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in _PARSERS:
            raise UserInputError(
                f"Unknown key {key!r} in sleeper:// spec: allowed keys are {allowed}, "
                f"got {key}={value!r}."
            )
        if key in given:
            raise UserInputError(f"Key {key!r} given twice in sleeper:// spec {url!r}.")
        given[key] = value
    for key, value in options.items():
        if value is None:
            continue
        if key not in _PARSERS:
            raise UserInputError(
                f"Unknown option {key!r} for sleeper://: allowed options are {allowed}, "
                f"got {key}={value!r}."
            )
        given[key] = value
    kwargs = {key: _PARSERS[key](key, value) for key, value in given.items()}
    kwargs.setdefault("seed", 0)
    kwargs.setdefault("sfreq", DEFAULT_SFREQ)
    return kwargs


def open_source(url: str, **options: object) -> VirtualSleeper:
    """Open the virtual sleeper described by ``url`` (see :func:`parse_spec`).

    Examples
    --------
    >>> src = open_source("sleeper://?seed=3&hours=0.5&artifacts=0")
    >>> src.info.ch_names[0]
    'C4-M1'
    """
    kwargs = parse_spec(url, **options)
    logger.debug("sleeper:// options %s", {k: v for k, v in kwargs.items() if k != "hypnogram"})
    return VirtualSleeper(**kwargs)  # type: ignore[arg-type]
