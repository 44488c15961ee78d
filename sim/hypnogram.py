"""Seeded hypnograms of a healthy adult night, and reading hypnograms from files.

The generative model follows the textbook architecture of sleep (Carskadon & Dement,
*Normal human sleep: an overview*, in Kryger et al., Principles and Practice of Sleep
Medicine; Ohayon et al. 2004, Sleep 27:1255 for the proportions):

* sleep onset (the first N2) after 6-20 min of wake and N1;
* NREM/REM cycles of about 90 min (the first one a little shorter);
* N3 concentrated in the first two cycles and nearly gone after the third;
* REM periods lengthening across the night (a few minutes in the first cycle, 25-35 min
  at the end);
* brief awakenings (one to a few 30-s epochs of W, then a little N1) scattered through
  the night, more often at the end of a cycle and in the second half of the night.

For an 8-h night the expected proportions are about W 6 %, N1 4 %, N2 53 %, N3 17 %,
R 19 % (mean of 300 seeded nights), within the ranges reported for healthy young and
middle-aged adults.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hal.base import STAGES, UserInputError

logger = logging.getLogger(__name__)

#: Epoch length in seconds (AASM).
EPOCH_S = 30.0

#: Other spellings accepted in hypnogram files (YASA, R&K-style exports).
_ALIASES = {
    "WAKE": "W",
    "REM": "R",
    "S1": "N1",
    "S2": "N2",
    "S3": "N3",
    "S4": "N3",
    "0": "W",
    "1": "N1",
    "2": "N2",
    "3": "N3",
    "4": "R",
}


def _minutes(rng: np.random.Generator, low: float, high: float) -> int:
    """Uniform duration in minutes, returned in whole epochs (at least one)."""
    return max(1, round(rng.uniform(low, high) * 60.0 / EPOCH_S))


def generate_hypnogram(rng: np.random.Generator, n_epochs: int) -> list[str]:
    """Draw a hypnogram of ``n_epochs`` 30-s epochs for a healthy adult.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of all randomness (the caller seeds it).
    n_epochs : int
        Length of the night in epochs (960 for 8 h).

    Returns
    -------
    list of str
        One stage of :data:`hal.base.STAGES` per epoch.

    Notes
    -----
    The night is built as a sleep-onset period followed by cycles; each cycle is N2 descent,
    N3 (split in one to three bouts by N2 intrusions), N2 ascent, an occasional epoch or
    two of N1, then REM. Brief awakenings are inserted afterwards so that they land both
    at cycle ends and inside sleep periods (never straight out of N3); each is followed by
    one to three epochs of N1, as re-entry into sleep passes through N1 in real recordings.
    """
    if n_epochs <= 0:
        return []
    hyp: list[str] = []
    hyp += ["W"] * _minutes(rng, 4.0, 14.0)
    hyp += ["N1"] * _minutes(rng, 2.0, 6.0)
    cycle_ends: list[int] = []
    cycle = 0
    while len(hyp) < n_epochs + 10:
        # Cycle lengths ~90 min; the first cycle is shorter (Carskadon & Dement).
        mean_len = 80.0 if cycle == 0 else 92.0
        cycle_len = float(np.clip(rng.normal(mean_len, 8.0), 65.0, 115.0))
        rem_ranges = [(5, 11), (13, 21), (18, 27), (22, 32), (25, 36)]
        rem_len = rng.uniform(*rem_ranges[min(cycle, len(rem_ranges) - 1)])
        n3_ranges = [(36, 50), (20, 32), (5, 16), (0, 7)]
        n3_len = rng.uniform(*n3_ranges[cycle]) if cycle < len(n3_ranges) else 0.0
        nrem_len = max(cycle_len - rem_len, n3_len + 12.0)
        descent = rng.uniform(5.0, 11.0)
        ascent = max(nrem_len - descent - n3_len, 3.0)
        hyp += ["N2"] * _minutes(rng, descent, descent)
        if n3_len >= 1.0:
            n_bouts = 1 if n3_len < 12 else int(rng.integers(1, 4))
            bounds = np.sort(rng.uniform(0.0, 1.0, n_bouts - 1))
            parts = np.diff(np.concatenate([[0.0], bounds, [1.0]])) * n3_len
            for i, part in enumerate(parts):
                if i:
                    hyp += ["N2"] * _minutes(rng, 1.0, 3.0)
                hyp += ["N3"] * _minutes(rng, max(part, 1.0), max(part, 1.0))
        hyp += ["N2"] * _minutes(rng, ascent, ascent)
        if rng.random() < 0.5:
            hyp += ["N1"] * int(rng.integers(1, 3))
        hyp += ["R"] * _minutes(rng, rem_len, rem_len)
        cycle_ends.append(len(hyp))
        cycle += 1
    # Final awakening in the morning.
    final_wake = _minutes(rng, 2.0, 8.0)
    hyp = hyp[: max(n_epochs - final_wake, 0)] + ["W"] * final_wake
    hyp = hyp[:n_epochs]
    _insert_awakenings(rng, hyp, cycle_ends)
    return hyp


def _insert_awakenings(rng: np.random.Generator, hyp: list[str], cycle_ends: list[int]) -> None:
    """Overwrite epochs in place with brief awakenings (W then N1)."""
    n = len(hyp)
    onset = next((i for i, s in enumerate(hyp) if s in ("N2", "N3", "R")), n)
    candidates: list[int] = [e for e in cycle_ends if onset < e < n - 4 and rng.random() < 0.7]
    hours = n * EPOCH_S / 3600.0
    # About two scattered awakenings per hour of sleep, more in the second half of the night
    # (awakenings grow more frequent as homeostatic pressure falls).
    n_scatter = rng.poisson(1.8 * hours)
    if n > onset + 20:
        w = np.linspace(0.6, 1.4, n - onset)
        where = rng.choice(np.arange(onset, n), size=min(n_scatter, n - onset), p=w / w.sum())
        candidates += [int(i) for i in where]
    for start in sorted(candidates):
        if start >= n - 4 or hyp[start] == "W":
            continue
        if hyp[start] == "N3":
            # Awakenings straight out of N3 are rare; lighten instead.
            continue
        n_w = int(rng.choice([1, 1, 2, 2, 3]))
        n_n1 = int(rng.choice([1, 2, 2, 3]))
        for i in range(start, min(start + n_w, n)):
            hyp[i] = "W"
        for i in range(start + n_w, min(start + n_w + n_n1, n)):
            if hyp[i] != "W":
                hyp[i] = "N1"


def stage_fractions(hypnogram: Sequence[str]) -> dict[str, float]:
    """Fraction of epochs in each stage of :data:`hal.base.STAGES`.

    Parameters
    ----------
    hypnogram : sequence of str
        Stages per epoch.

    Returns
    -------
    dict
        ``{"W": ..., "N1": ..., "N2": ..., "N3": ..., "R": ...}``, summing to 1 (all zero for
        an empty hypnogram).
    """
    n = max(len(hypnogram), 1)
    return {s: sum(1 for h in hypnogram if h == s) / n for s in STAGES}


def normalize_stage(value: str, where: str = "hypnogram") -> str:
    """Map a stage label (``W``, ``WAKE``, ``REM``, ``S4``...) to one of :data:`STAGES`.

    Case and surrounding spaces are ignored; ``S3`` and ``S4`` are N3, and YASA's integers
    ``0``-``4`` are W, N1, N2, N3, R.

    Parameters
    ----------
    value : str
        The label.
    where : str
        Where it was read, for the error message.

    Returns
    -------
    str
        One of :data:`hal.base.STAGES`.

    Raises
    ------
    UserInputError
        The label is not a known stage.
    """
    label = str(value).strip().upper()
    label = _ALIASES.get(label, label)
    if label not in STAGES:
        raise UserInputError(
            f"Invalid stage {value!r} in {where}: allowed are {', '.join(STAGES)} "
            f"(or WAKE, REM, S1-S4)."
        )
    return label


def read_hypnogram(path: str | Path) -> list[str]:
    """Read a hypnogram file: one stage per 30-s epoch.

    Accepted layouts: a CSV with a ``stage`` column (as the simulator's own
    ``hypnogram.csv``: ``epoch_start_s,stage``), or one stage per line (the last column
    of each row). The file is UTF-8 text, with or without a byte-order mark; blank lines
    are skipped, and errors name the file and its 1-based line.

    Parameters
    ----------
    path : str or Path
        File to read.

    Returns
    -------
    list of str
        Stages of :data:`hal.base.STAGES`.

    Raises
    ------
    UserInputError
        Missing, unreadable or empty file, not UTF-8 text, malformed CSV, a header
        without epochs, a row without the stage column, or an unknown stage label.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserInputError(f"hypnogram file not found: {str(p)!r}")
    try:
        raw = p.read_bytes()
    except OSError as err:
        raise UserInputError(
            f"Cannot read hypnogram file {str(p)!r}: {err.strerror or err}"
        ) from None
    try:
        # utf-8-sig: a byte-order mark (as spreadsheet exports write) is not part of the text.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise UserInputError(
            f"hypnogram file {p.name} line {line} is not UTF-8 text: byte "
            f"{raw[err.start]:#04x} ({str(p)!r})."
        ) from None
    # (line number, row) of the rows that hold something; line numbers are the file's.
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[tuple[int, list[str]]] = []
    try:
        for row in reader:
            if row and any(c.strip() for c in row):
                rows.append((reader.line_num, row))
    except csv.Error as err:
        raise UserInputError(
            f"Malformed hypnogram file {p.name} line {reader.line_num}: {err} ({str(p)!r})."
        ) from None
    if not rows:
        raise UserInputError(f"hypnogram file is empty: {str(p)!r}")
    header = [c.strip().lower() for c in rows[0][1]]
    if "stage" in header:
        col = header.index("stage")
        body = rows[1:]
        column = f"column {col + 1} ('stage')"
    else:
        col = len(rows[0][1]) - 1
        body = rows
        column = f"column {col + 1}"
    stages = []
    for line, row in body:
        if len(row) <= col:
            raise UserInputError(
                f"Missing stage in hypnogram file {p.name} line {line}: expected a stage in "
                f"{column}, got {len(row)} field(s) {','.join(row)!r} ({str(p)!r})."
            )
        stages.append(normalize_stage(row[col], where=f"{p.name} line {line}"))
    if not stages:
        raise UserInputError(f"hypnogram file has no epochs: {str(p)!r}")
    return stages


def rem_period_starts(hypnogram: Sequence[str], merge_epochs: int = 30) -> list[int]:
    """Epoch indices where REM periods start (one per NREM/REM cycle).

    REM runs whose R epochs are at most ``merge_epochs`` epochs apart (by default: less
    than 15 min of other stages between them) belong to the same REM period, as in the
    Feinberg & Floyd (1979) cycle definition.

    Parameters
    ----------
    hypnogram : sequence of str
        Stages per 30-s epoch.
    merge_epochs : int
        Largest distance, in epochs, from one R epoch to the next within a REM period.

    Returns
    -------
    list of int
        Index of the first R epoch of each REM period, in order.
    """
    starts: list[int] = []
    last_r: int | None = None
    for i, s in enumerate(hypnogram):
        if s == "R":
            if last_r is None or i - last_r > merge_epochs:
                starts.append(i)
            last_r = i
    return starts
