"""
What is done with the result files of ``bench/run.py``: formatting, the tables of
docs/performance.md, and the sanity band of CI's quick runs.

- **Recorded results** are the result files the documentation cites, committed under
  ``bench/results/recorded/`` (``bench/run.py --record NAME``); ad-hoc runs stay in
  ``bench/results/`` (git-ignored).
- **Tables**: each block of docs/performance.md between
  ``<!-- bench-table FILE CASE ... -->`` and ``<!-- /bench-table -->`` is generated from
  that recorded FILE by :func:`render_table` (``python3 bench/doc_tables.py`` rewrites them);
  tests/test_performance_doc.py checks that every block is what its file gives, and that
  every ratio quoted in the prose (``1.23×``) is one of the cited files' ratios.
- **The CI band** (:func:`band_problems`): ``bench/run.py --quick --check-against FILES``
  fails when a case or an implementation produced no numbers, when a number is not finite,
  when a quick ratio hub / reference of a throughput metric lies outside
  [recorded / BAND, recorded x BAND], or when, for one reference, the geometric mean of
  (ratio / recorded ratio) over those cases lies outside [1 / MEAN_BAND, MEAN_BAND]; "recorded"
  is the latest recorded quick baseline (a ``--quick
  --repeats 3`` run: a quick run's cases are smaller than a full run's, and so are some ratios).  See
  docs/performance.md, "What CI checks", for why the band is that wide.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORDED_DIR = os.path.join(ROOT, "bench", "results", "recorded")
DOC = os.path.join(ROOT, "docs", "performance.md")

#: one case's ratio may lie this many times above or below the recorded one: a collapse, not noise
#: (single quick repeats of the baseline itself strayed from their median by up to 6.3 times)
BAND = 8.0
#: the geometric mean, per reference, of (ratio / recorded ratio) over the banded cases may lie
#: this many times above or below 1: a shift of the hub (or a reference) as a whole
MEAN_BAND = 2.0
#: the metrics whose ratios the band checks, per case prefix: throughput, where one quick repeat is
#: steady enough; CPU per event of tiny quick runs (and everything of the idle cases, whose net
#: CPU at N = 20 is within the idle server's own noise) is checked for being there and finite only
BAND_METRICS = {"rpc": "calls_per_s", "fanout": "delivered_per_s", "accept": "conns_per_s"}


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def fmt(value: float) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"  # a count (connections, attempts): no decimals
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def fmt_spread(sp: dict[str, float] | None) -> str:
    if not sp:
        return "n/a"
    if sp["n"] == 1:
        return fmt(sp["median"])
    return f"{fmt(sp['median'])} [{fmt(sp['min'])}..{fmt(sp['max'])}]"


def load(path: str) -> dict[str, Any]:
    with open(path if os.path.isabs(path) else os.path.join(ROOT, path)) as f:
        document: dict[str, Any] = json.load(f)
    return document


def impls_of(document: dict[str, Any]) -> list[str]:
    """The implementations of a result file, hub first, in the order they ran."""
    impls: list[str] = list(document.get("impls") or [])
    if not impls:
        for by_impl in document["runs"].values():
            for impl in by_impl:
                if impl not in impls:
                    impls.append(impl)
    return impls


# -- tables of docs/performance.md ---------------------------------------------
BLOCK = re.compile(
    r"<!-- bench-table (?P<file>\S+)(?P<cases>(?: [\w-]+)+) -->\n(?P<body>.*?)<!-- /bench-table -->", re.S
)


def render_table(document: dict[str, Any], cases: list[str], labels: dict[str, list[tuple[str, str]]]) -> str:
    """
    One markdown table: per case and metric, each implementation's median and each ratio
    hub / reference as median [min..max] over the repeats (ratios taken within one repeat);
    with no reference (bench/storm.py), the hub's median [min..max].
    C{labels}: case -> [(metric, label)], the primary metric first; a case it does not name
    takes the labels the result file itself holds (C{"labels"}, bench/storm.py's).
    """
    impls = impls_of(document)
    refs = [impl for impl in impls if impl != "hub"]
    machine, v = document["machine"], document.get("versions", {})
    load_before = machine.get("loadavg_before", [math.nan])[0]
    caption = (
        f"`{re.sub(r' --note .*?(?= --|$)', '', document['command'])}`: started {document['started']}, "
        f"commit `{document.get('commit') or '?'}`, "
        f"{document['duration_s']:.0f} s, {document['settings']['repeats']} interleaved repeats; "
        f"{machine['cpus']} cores, load average (1 min) {load_before:.1f} before, {machine['loadavg'][0]:.1f} after; "
        f"Python {machine['python']}, Twisted {v.get('twisted')} ({v.get('twisted_reactor')}), "
        f"autobahn {v.get('autobahn')} (NVX {'on' if v.get('autobahn_nvx') else 'off'}), "
        f"websockets {v.get('websockets')} (speedups {'on' if v.get('websockets_speedups') else 'off'}), "
        f"uvloop {v.get('uvloop')}, msgpack {v.get('msgpack')}"
        + (f"; {document['note']}" if document.get("note") else "") + "."
    )
    shown = (lambda impl: f"`{impl}`") if refs else (lambda impl: f"`{impl}` median [min..max]")
    head = ["case", "metric", *(shown(impl) for impl in impls), *(f"hub ÷ `{ref}`" for ref in refs)]
    lines = [caption, "", "| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(impls) + len(refs))]
    for case in cases:
        entry = document["summary"].get(case)
        if entry is None:
            raise KeyError(f"{case} is not in the result file")
        rows = labels.get(case) or document.get("labels", {}).get(case)
        if not rows:
            raise KeyError(f"no labels for the metrics of {case}")
        for metric, label in rows:
            values = entry["metrics"].get(metric, {})
            ratios = entry["ratios"].get(metric, {})
            if not any(values.values()):
                continue  # a metric newer than the file (measured by later runs only)
            cells = [f"`{case}`", label]
            if refs:
                cells += [fmt(values[impl]["median"]) if values.get(impl) else "n/a" for impl in impls]
            else:
                cells += [fmt_spread(values.get(impl)) for impl in impls]
            cells += [fmt_spread(ratios.get(ref)) for ref in refs]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def doc_blocks(text: str) -> list[re.Match[str]]:
    return list(BLOCK.finditer(text))


def regenerate(text: str, labels: dict[str, list[tuple[str, str]]]) -> str:
    """C{text} with every bench-table block rendered again from its file."""

    def one(match: re.Match[str]) -> str:
        document = load(match["file"])
        body = render_table(document, match["cases"].split(), labels)
        return f"<!-- bench-table {match['file']}{match['cases']} -->\n{body}<!-- /bench-table -->"

    return BLOCK.sub(one, text)


def cited_files(text: str) -> list[str]:
    """Every recorded result file the text names (in a table block or in the prose)."""
    found = re.findall(r"bench/results/recorded/[a-z0-9][\w.+-]*\.json", text)
    return list(dict.fromkeys(found))


def ratio_strings(document: dict[str, Any]) -> set[str]:
    """Every ratio of a result file of bench/run.py (median, min, max) as the doc prints it."""
    shown: set[str] = set()
    # bench/streams.py: stream / receiver calls; bench/filters.py: each variant / the tree before filters
    for sp in [*document.get("stream_ratios", {}).values(), *document.get("filter_ratios", {}).values()]:
        shown.update(fmt(sp[key]) for key in ("median", "min", "max"))
    for entry in document.get("summary", {}).values():
        for by_ref in entry["ratios"].values():
            for sp in by_ref.values():
                if sp:
                    shown.update(fmt(sp[key]) for key in ("median", "min", "max"))
    return shown


#: a ratio quoted in prose: "1.23×"; bounds of targets ("≥ 1.5×", ">= 1.0x") are not results
PROSE_RATIO = re.compile(r"(?<![\d.,])(?<![≥≤<>=] )(?<![≥≤<>=])(\d+(?:\.\d+)?)×")


def prose_ratios(text: str) -> list[str]:
    """The ratios quoted outside the generated tables."""
    outside = BLOCK.sub("", text)
    return PROSE_RATIO.findall(outside)


# -- CI: sanity and band of a quick run ----------------------------------------
def recorded_ratio(
    recorded: list[dict[str, Any]], case: str, metric: str, ref: str, quick: bool
) -> tuple[float, str] | None:
    """
    The median ratio hub / C{ref} of the latest recorded run of the same kind (C{quick} or
    full: their cases differ in size, and so do their ratios) that has it, and that run's start.
    """
    best: tuple[str, float] | None = None
    for document in recorded:
        if "summary" not in document or bool(document.get("quick")) != quick:
            continue  # another bench's result file (bench/workers.py), or the other kind of run
        sp = document["summary"].get(case, {}).get("ratios", {}).get(metric, {}).get(ref)
        if sp and (best is None or document["started"] > best[0]):
            best = (document["started"], sp["median"])
    return None if best is None else (best[1], best[0])


def band_problems(
    runs: dict[str, dict[str, list[dict[str, float] | None]]],
    summary: dict[str, Any],
    recorded: list[dict[str, Any]],
    quick: bool = True,
    band: float = BAND,
    mean_band: float = MEAN_BAND,
) -> tuple[list[str], list[str]]:
    """
    Check a run (C{quick} or full): every case and implementation produced numbers, every
    number is finite, and each banded ratio is within C{band} times, either way, of the one
    recorded by the latest run of the same kind.  Returns (problems, lines of the report).
    """
    problems: list[str] = []
    report: list[str] = []
    shifts: dict[str, list[float]] = {}  # reference -> log(ratio / recorded ratio) per case
    for case, by_impl in runs.items():
        for impl, results in by_impl.items():
            got = [r for r in results if r is not None]
            if not got:
                problems.append(f"{case}/{impl}: no numbers")
            for result in got:
                for metric, value in result.items():
                    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                        problems.append(f"{case}/{impl}: {metric} = {value!r}")
        metric = next((m for prefix, m in BAND_METRICS.items() if case.startswith(prefix)), None)
        if metric is None:
            continue
        for ref, sp in summary.get(case, {}).get("ratios", {}).get(metric, {}).items():
            if sp is None:
                continue
            found = recorded_ratio(recorded, case, metric, ref, quick)
            if found is None:
                report.append(f"  {case:<12} hub/{ref:<16} {fmt(sp['median']):>8}  (nothing recorded)")
                continue
            then, started = found
            if sp["median"] > 0 and then > 0:
                shifts.setdefault(ref, []).append(math.log(sp["median"] / then))
            low, high = then / band, then * band
            ok = low <= sp["median"] <= high
            report.append(
                f"  {case:<12} hub/{ref:<16} {fmt(sp['median']):>8}  recorded {fmt(then)} ({started}), "
                f"band [{fmt(low)}..{fmt(high)}]: {'ok' if ok else 'OUTSIDE'}"
            )
            if not ok:
                problems.append(
                    f"{case}: {metric} hub/{ref} = {fmt(sp['median'])}, outside [{fmt(low)}..{fmt(high)}] "
                    f"(recorded {fmt(then)}, x/÷ {band:g})"
                )
    for ref, logs in shifts.items():
        mean = math.exp(sum(logs) / len(logs))
        ok = 1 / mean_band <= mean <= mean_band
        report.append(f"  all {len(logs)} cases  hub/{ref:<16} geometric mean of ratio / recorded: {fmt(mean)}, "
                      f"band [{fmt(1 / mean_band)}..{fmt(mean_band)}]: {'ok' if ok else 'OUTSIDE'}")
        if not ok:
            problems.append(f"hub/{ref}: the ratios are {fmt(mean)} times the recorded ones on (geometric) average, "
                            f"outside [{fmt(1 / mean_band)}..{fmt(mean_band)}] over {len(logs)} cases")
    return problems, report
