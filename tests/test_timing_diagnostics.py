"""
The in-process timing diagnostics docs/performance.md quotes
(bench/move_costs.py, bench/snapshot_costs.py) still run and print every
row, on a few runs each (what they measure is not checked: they are
diagnostics, timed by whoever reads the page).  Run in this process, as
their command line would (no child process).
"""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.parametrize(("script", "rows"), [
    ("move_costs.py", ["history (SendHistory.add)", "caller check (send_to)", "encode", "sign"]),
    ("snapshot_costs.py", ["busy check", "quiet, unchanged", "encode", "write"]),
])
def test_the_diagnostic_prints_each_row(
    script: str, rows: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(sys, "argv", [script, "--number", "200", "--repeats", "1"])
    monkeypatch.syspath_prepend(str(BENCH))  # (the scripts import each other by name, as when run from bench/)
    runpy.run_path(str(BENCH / script), run_name="__main__")
    out = capsys.readouterr().out
    for row in rows:
        assert re.search(re.escape(row) + r".*\d", out), (row, out)
