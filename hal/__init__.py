"""Hardware abstraction layer: the only code that knows where samples come from and where
stimuli go.

Sources are chosen by a URL-like spec, as pyserial's ``serial_for_url`` does: the scheme
names a module ``hal.backends.protocol_<scheme>`` (``-`` becomes ``_``) that defines
``open_source(url, **options)``. Adding a backend is adding a module: there is no
registration code.

>>> src = open_source("sleeper://?seed=1&hours=0.1")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from urllib.parse import urlsplit

from hal.base import (
    DEFAULT_BLOCK,
    DEFAULT_SFREQ,
    ROLES,
    STAGES,
    Annotation,
    ChannelSpec,
    SignalSource,
    SourceInfo,
    Stimulus,
    Transducer,
    UserInputError,
    check_option,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_BLOCK",
    "DEFAULT_SFREQ",
    "ROLES",
    "STAGES",
    "Annotation",
    "ChannelSpec",
    "SignalSource",
    "SourceInfo",
    "Stimulus",
    "Transducer",
    "UserInputError",
    "check_option",
    "open_source",
    "known_schemes",
]


def known_schemes() -> list[str]:
    """Schemes for which a backend module exists (``sleeper``, ``file``, ...).

    Returns
    -------
    list of str
        Scheme names, sorted (``_`` in a module name is ``-`` in its scheme).
    """
    folder = Path(__file__).parent / "backends"
    return sorted(
        p.stem.removeprefix("protocol_").replace("_", "-") for p in folder.glob("protocol_*.py")
    )


def _is_plain_path(spec: str, scheme: str) -> bool:
    """Whether ``spec`` names a file rather than a ``scheme://`` source.

    A file that exists is a path whatever it looks like (``rec-T22:30.edf`` parses as
    the scheme ``rec-t22``); so is anything without ``://`` but ``file:rel``, and a
    Windows drive letter (``C:\\night.edf`` parses as a one-letter scheme).
    """
    if scheme == "" or len(scheme) == 1:
        return True
    if scheme == "file":
        return False
    return "://" not in spec or Path(spec).expanduser().exists()


def open_source(spec: str, **options: object) -> SignalSource:
    """Open a signal source from a spec string.

    Parameters
    ----------
    spec : str
        ``scheme://...`` (``sleeper://?seed=1&hours=8``, ``file:///night.edf?channel=C3-A1``,
        ``sleep-physionet://0/1``, ``mne-sample://``) or a plain path to a recording.
    **options
        Passed to the backend (``sfreq``, ``channel``, ``min_sfreq``...). Options given in
        the spec's query string win over defaults but not over explicit keywords.

    Returns
    -------
    SignalSource
        The opened source; close it (or use it as a context manager) when done.

    Raises
    ------
    UserInputError
        Unknown scheme, missing file, wrong channel, unusable recording.
    ModuleNotFoundError
        The backend module exists but a package it imports is not installed.
    """
    parts = urlsplit(spec)
    scheme = parts.scheme
    if _is_plain_path(spec, scheme):
        path = Path(spec).expanduser()
        head, sep, query = spec.partition("?")
        if sep and not path.exists() and Path(head).expanduser().is_file():
            # Options ride on a URL only: a '?' in a plain path is part of its name.
            url = Path(head).expanduser().resolve().as_uri()
            raise UserInputError(
                f"No such recording: {spec}. Options need the URL form: '{url}?{query}'."
            )
        scheme, spec = "file", path.resolve().as_uri()
    module_name = "hal.backends.protocol_" + scheme.replace("-", "_")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name:
            raise
        check_option("source scheme", scheme, known_schemes())
        raise  # unreachable: check_option raised
    logger.debug("opening %s with %s", spec, module_name)
    return module.open_source(spec, **options)
