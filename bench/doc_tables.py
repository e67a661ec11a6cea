#!/usr/bin/env python3
"""
The tables of docs/performance.md from the recorded result files they name:
``python3 bench/doc_tables.py`` rewrites every ``<!-- bench-table FILE CASE ... -->`` block,
``python3 bench/doc_tables.py --check`` only says whether they are up to date (exit 1 if not;
tests/test_performance_doc.py checks the same).  See bench/_results.py.
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _results import DOC, doc_blocks, regenerate  # noqa: E402
from run import metric_labels  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when a table is out of date")
    args = parser.parse_args()
    with open(DOC) as f:
        text = f.read()
    fresh = regenerate(text, metric_labels())
    blocks = len(doc_blocks(text))
    if args.check:
        if fresh != text:
            print(f"{os.path.relpath(DOC)}: tables differ from their result files; run python3 bench/doc_tables.py")
            return 1
        print(f"{blocks} table(s) match their result files")
        return 0
    if fresh != text:
        with open(DOC, "w") as f:
            f.write(fresh)
    print(f"{blocks} table(s) {'rewritten' if fresh != text else 'already up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
