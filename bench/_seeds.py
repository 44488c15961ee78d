"""The command line shared by the benchmarks that compare programs over seeded nights."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable

from bench._json import json_line


def seeds_main(
    doc: str,
    compare: Callable[[list[int]], dict],
    argv: list[str] | None,
    prog: str | None = None,
) -> int:
    """Parse ``--seeds N``, run ``compare`` on seeds 1..N and print its JSON line.

    Parameters
    ----------
    doc : str
        The benchmark module's docstring (its first paragraph is the help text).
    compare : callable
        Takes the seeds, returns a JSON-serialisable result.
    argv : list of str or None
        Arguments (None: the command line).
    prog : str, optional
        How ``--help`` names the command (``"python -m bench.onset"``).
    """
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=6, help="nights (seeds 1..N)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print(json_line(compare(list(range(1, args.seeds + 1)))))
    return 0
