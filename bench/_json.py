"""The JSON line every benchmark prints last: strict JSON that any parser reads.

Python's :func:`json.dumps` writes ``NaN`` and ``Infinity`` for non-finite floats, which
are not JSON (``jq``, JavaScript and most other parsers refuse the whole line). A metric
that has no value (a mean over no stimulus, a rate over no minute of N2/N3) is written as
``null`` instead.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def strict(obj: object) -> Any:
    """``obj`` with every non-finite float replaced by None, ready for strict JSON.

    Dicts and lists are copied (tuples and arrays become lists); NumPy scalars become
    Python numbers. Anything else is returned as it is.
    """
    if isinstance(obj, dict):
        return {key: strict(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(value) for value in obj]
    if isinstance(obj, np.ndarray):
        return strict(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    return obj


def json_line(obj: object, **kwargs: Any) -> str:
    """One line of strict JSON for ``obj`` (non-finite floats written as ``null``).

    Parameters
    ----------
    obj : object
        The benchmark's result (dicts, lists, numbers, strings).
    **kwargs
        Passed to :func:`json.dumps` (``separators=``...).

    Returns
    -------
    str
        The JSON text; ``json.dumps`` raises rather than write ``NaN`` or ``Infinity``.
    """
    return json.dumps(strict(obj), allow_nan=False, **kwargs)
