"""The command line shared by the benchmarks that compare programs over seeded nights."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable


def seeds_main(doc: str, compare: Callable[[list[int]], dict], argv: list[str] | None) -> int:
    """Parse ``--seeds N``, run ``compare`` on seeds 1..N and print its JSON line.

    Parameters
    ----------
    doc : str
        The benchmark module's docstring (its first paragraph is the help text).
    compare : callable
        Takes the seeds, returns a JSON-serialisable result.
    argv : list of str or None
        Arguments (None: the command line).
    """
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=6, help="nights (seeds 1..N)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(compare(list(range(1, args.seeds + 1)))))
    return 0
