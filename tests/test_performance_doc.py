"""
docs/performance.md against the result files behind it (issue 23 item 8, issue 24 item 1).

Every table of benchmark figures in the doc is a generated block naming a recorded result
file of ``bench/run.py`` (``bench/results/recorded/*.json``, committed); the blocks must be
exactly what ``bench/doc_tables.py`` renders from those files.  Every ratio the prose quotes
(``1.23×``) must be one of the cited files' ratios (median, min or max, as printed), so a
figure cannot be typed in by hand.  Absolute figures appear only in the generated tables.

The band that CI's quick bench runs are held to (``bench/run.py --quick --check-against``)
is tested here on made-up runs: it flags missing and non-finite numbers and ratios outside
the band, and nothing else.
"""

from __future__ import annotations

import importlib
import math
import os
import re
import sys
import unittest
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")


def _bench_module(name: str) -> Any:
    """A module of bench/ (not a package: its scripts import each other by name)."""
    if BENCH not in sys.path:
        sys.path.insert(0, BENCH)
    return importlib.import_module(name)


results = _bench_module("_results")
run = _bench_module("run")


def _doc() -> str:
    with open(results.DOC) as f:
        text: str = f.read()
    return text


class DocAgainstResultFilesTests(unittest.TestCase):
    def test_tables_are_generated_from_their_result_files(self) -> None:
        text = _doc()
        blocks = results.doc_blocks(text)
        self.assertGreaterEqual(len(blocks), 3, "the main cases' tables are generated blocks")
        fresh = results.regenerate(text, run.metric_labels())
        if fresh != text:
            for old, new in zip(text.splitlines(), fresh.splitlines()):
                if old != new:
                    self.fail(f"a table differs from its result file (python3 bench/doc_tables.py):\n"
                              f"doc:  {old}\nfile: {new}")
            self.fail("the tables differ from their result files in length (python3 bench/doc_tables.py)")

    def test_cited_result_files_are_recorded_runs(self) -> None:
        cited = results.cited_files(_doc())
        self.assertTrue(cited)
        for path in cited:
            with self.subTest(path=path):
                self.assertTrue(os.path.isfile(os.path.join(ROOT, path)), f"{path} is not in the repository")
                document = results.load(path)
                if "summary" not in document:
                    continue  # another bench's result file (bench/workers.py): present is all that is checked
                self.assertGreaterEqual(document["settings"]["repeats"], 3, "median of >= 3 interleaved repeats")
                self.assertEqual(document["impls"][0], "hub")
                for key in ("command", "started", "commit", "versions", "machine", "note"):
                    self.assertTrue(document.get(key), f"{path} records no {key}")
                self.assertEqual(document["failures"], [])

    def test_tables_come_from_full_runs(self) -> None:
        for block in results.doc_blocks(_doc()):
            with self.subTest(path=block["file"]):
                self.assertFalse(results.load(block["file"])["quick"], "a --quick run is a smoke test, not a figure")

    def test_no_figure_cites_an_unrecorded_result_file(self) -> None:
        # bench/results/ outside recorded/ is git-ignored: a figure citing it has nothing behind it
        unrecorded = re.findall(r"bench/results/(?!recorded/)[\w.-]+\.json", _doc())
        self.assertEqual(unrecorded, [])

    def test_prose_ratios_are_recorded_ratios(self) -> None:
        text = _doc()
        known: set[str] = set()
        for path in results.cited_files(text):
            known |= results.ratio_strings(results.load(path))
        quoted = results.prose_ratios(text)
        self.assertTrue(quoted, "the prose quotes some ratios")
        self.assertEqual([q for q in quoted if q not in known], [],
                         "ratios quoted in docs/performance.md that no cited result file has")

    def test_prose_ratio_pattern(self) -> None:
        text = "hub 1.45× websockets; target ≥ 1.5× and >= 1.0×; [1.00..1.51]\n" \
               "<!-- bench-table f.json rpc1 -->\n| 9.99× |\n<!-- /bench-table -->"
        self.assertEqual(results.prose_ratios(text), ["1.45"])


def _result(value: float) -> dict[str, float]:
    return {"calls_per_s": value, "server_cpu_us_per_call": 100.0}


def _recorded(ratio: float, started: str, quick: bool = True) -> dict[str, Any]:
    return {"quick": quick, "started": started, "summary": {"rpc1": {"ratios": {
        "calls_per_s": {"autobahn": {"median": ratio, "min": ratio, "max": ratio, "n": 3}}}}}}


class BandTests(unittest.TestCase):
    def check(self, hub: float, ref: float, recorded: list[dict[str, Any]]) -> list[str]:
        runs = {"rpc1": {"hub": [_result(hub)], "autobahn": [_result(ref)]}}
        problems, _ = results.band_problems(runs, run.summarize(runs), recorded, quick=True)
        return list(problems)

    def test_within_the_band(self) -> None:
        recorded = [_recorded(1.5, "2026-12-07T00:30:00+0000")]
        self.assertEqual(self.check(1500, 1000, recorded), [])
        self.assertEqual(self.check(1.5 * 1.9, 1, recorded), [])
        self.assertEqual(self.check(1.5 / 1.9, 1, recorded), [])

    def test_outside_the_band(self) -> None:
        # one case far out: both the case's band and the reference's mean (of one case) say so
        recorded = [_recorded(1.5, "2026-12-07T00:30:00+0000")]
        problems = self.check(1.5 * results.BAND * 1.1, 1, recorded)
        self.assertEqual(len(problems), 2)
        self.assertTrue(all("autobahn" in p for p in problems))
        self.assertTrue(any("rpc1" in p for p in problems))
        self.assertEqual(len(self.check(1.5 / (results.BAND * 1.1), 1, recorded)), 2)

    def test_a_shift_of_every_case_is_caught_by_the_mean(self) -> None:
        # every case 2.5 times the recorded ratio: each within its own band, the mean is not
        cases = ("rpc1", "rpc100", "fanout", "accept")
        metric = {"rpc1": "calls_per_s", "rpc100": "calls_per_s", "fanout": "delivered_per_s", "accept": "conns_per_s"}
        recorded = [{"quick": True, "started": "2026-12-07T00:00:00+0000", "summary": {
            case: {"ratios": {metric[case]: {"autobahn": {"median": 1.0, "min": 1.0, "max": 1.0, "n": 3}}}}
            for case in cases}}]

        def runs(factor: float) -> tuple[list[str], list[str]]:
            data = {case: {"hub": [{metric[case]: factor}], "autobahn": [{metric[case]: 1.0}]} for case in cases}
            summary = {case: {"ratios": {metric[case]: {"autobahn": {"median": factor, "min": factor, "max": factor,
                                                                     "n": 1}}}} for case in cases}
            return results.band_problems(data, summary, recorded, quick=True)

        self.assertEqual(runs(1.9)[0], [])
        [problem] = runs(2.5)[0]
        self.assertIn("geometric", problem)
        [problem] = runs(1 / 2.5)[0]
        self.assertIn("hub/autobahn", problem)

    def test_latest_run_of_the_same_kind_is_the_reference(self) -> None:
        # a quick run is held to the latest quick baseline, not to a later full run (other sizes)
        recorded = [_recorded(1.0, "2026-12-01T00:00:00+0000"), _recorded(10.0, "2026-12-07T00:00:00+0000"),
                    _recorded(100.0, "2026-12-08T00:00:00+0000", quick=False)]
        self.assertEqual(self.check(10, 1, recorded), [])  # 10 vs 10: in; vs 1 or 100 it would be out
        self.assertTrue(self.check(1, 1, recorded))

    def test_nothing_recorded_is_no_band_problem(self) -> None:
        self.assertEqual(self.check(1, 1000, []), [])
        # another bench's result file (bench/workers.py: no summary) among the recorded ones is skipped
        other = {"settings": {"quick": False}, "runs": {"fanout-w1": []}}
        self.assertEqual(self.check(1, 1000, [other]), [])
        recorded = [other, _recorded(1.5, "2026-12-07T00:30:00+0000")]
        self.assertEqual(self.check(1.5, 1, recorded), [])
        runs = {"rpc1": {"hub": [_result(1.5)], "autobahn": [_result(1.0)]}}
        full = [other, _recorded(1.5, "2026-12-07T00:30:00+0000", quick=False)]
        self.assertEqual(results.band_problems(runs, run.summarize(runs), full, quick=False)[0], [])

    def test_missing_and_non_finite_numbers(self) -> None:
        runs: dict[str, dict[str, list[dict[str, float] | None]]] = {
            "rpc1": {"hub": [_result(math.nan)], "autobahn": [None]},
        }
        problems, _ = results.band_problems(runs, run.summarize(runs), [], quick=True)
        self.assertEqual(len(problems), 2)
        self.assertTrue(any("no numbers" in p for p in problems))
        self.assertTrue(any("nan" in p for p in problems))

    def test_cpu_ratios_and_idle_cases_are_not_banded(self) -> None:
        recorded = [_recorded(1.5, "2026-12-07T00:30:00+0000")]
        idle = {"server_cpu_pct": 1.0, "mem_kb_per_conn": 12.0, "beats_per_s": 20.0, "conns": 20}
        runs = {"rpc1": {"hub": [{"calls_per_s": 1.5, "server_cpu_us_per_call": 1.0}],
                         "autobahn": [{"calls_per_s": 1.0, "server_cpu_us_per_call": 1000.0}]},
                "idle1000": {"hub": [dict(idle, server_cpu_us_per_beat=0.0)],
                             "autobahn": [dict(idle, server_cpu_us_per_beat=50.0)]}}
        problems, _ = results.band_problems(runs, run.summarize(runs), recorded, quick=True)
        self.assertEqual(problems, [])


class RenderTests(unittest.TestCase):
    def test_a_table(self) -> None:
        runs = {"rpc1": {"hub": [_result(3000), _result(4000), _result(5000)],
                         "autobahn": [_result(2000), _result(2000), _result(2500)]}}
        document = {"impls": ["hub", "autobahn"], "runs": runs, "summary": run.summarize(runs),
                    "command": "python3 bench/run.py --only rpc1", "started": "2026-12-07T00:30:23+0000",
                    "commit": "1f8cc15", "duration_s": 61.4, "settings": {"repeats": 3}, "note": "a note",
                    "machine": {"cpus": 2, "python": "3.11.7", "loadavg_before": [3.54, 3.5, 2.0],
                                "loadavg": [9.96, 9.0, 4.0]},
                    "versions": {"twisted": "26.10.0", "twisted_reactor": "EPollReactor", "autobahn": "26.11.1",
                                 "autobahn_nvx": True, "websockets": "17.4", "websockets_speedups": True,
                                 "uvloop": "0.23.0", "msgpack": "1.2.4"}}
        table = results.render_table(document, ["rpc1"], {"rpc1": [("calls_per_s", "calls/s")]})
        self.assertEqual(table, "`python3 bench/run.py --only rpc1`: started 2026-12-07T00:30:23+0000, commit `1f8cc15`, "
                                "61 s, 3 interleaved repeats; 2 cores, load average (1 min) 3.5 before, 10.0 after; "
                                "Python 3.11.7, Twisted 26.10.0 (EPollReactor), autobahn 26.11.1 (NVX on), "
                                "websockets 17.4 (speedups on), uvloop 0.23.0, msgpack 1.2.4; a note.\n\n"
                                "| case | metric | `hub` | `autobahn` | hub ÷ `autobahn` |\n"
                                "|---|---|---:|---:|---:|\n"
                                "| `rpc1` | calls/s | 4,000 | 2,000 | 2.00 [1.50..2.00] |\n")


if __name__ == "__main__":
    unittest.main()
