"""
The in-process timing diagnostics docs/performance.md quotes
(bench/move_costs.py, bench/snapshot_costs.py) still run and print every
row, on a few runs each (what they measure is not checked: they are
diagnostics, timed by whoever reads the page).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.parametrize(("script", "rows"), [
    ("move_costs.py", ["history (SendHistory.add)", "caller check (send_to)", "encode", "sign"]),
    ("snapshot_costs.py", ["busy check", "quiet, unchanged", "encode", "write"]),
])
def test_the_diagnostic_prints_each_row(script: str, rows: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--number", "200", "--repeats", "1"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    for row in rows:
        assert re.search(re.escape(row) + r".*\d", done.stdout), (row, done.stdout)
