#!/usr/bin/env python3
"""
What do filters cost a hub call on the server?  (docs/performance.md, docs/filters.md)

    python3 bench/filters.py                      # before = ff23577, main before filters were merged
    python3 bench/filters.py --repeats 3 --record bench/results/recorded/filters.json
    python3 bench/filters.py --before e87adad --repeats 7 --calls 20000
    python3 bench/filters.py --variants after+rate-limit after+call-timeout after+call-log

Side by side, in one run: the server's work per call of a tree without
filters (C{--before}, a commit, exported with C{git archive} to a temporary
folder), of the commit that merged the filters (C{--merged}, exported the
same way: the filters are the only change from C{--before}), both without
filters installed, and of this tree, without filters, with one pass-through filter,
and with the three shipped filters (C{RateLimit} that never refuses,
C{CallLog} written as text to /dev/null at info, as C{twistd hub --log-calls}
logs, C{CallTimeout(60)}); C{--variants} picks others, e.g. one shipped
filter at a time (C{before} and C{merged} are always measured).  Each variant runs in a process of its own
(C{PYTHONPATH} = its tree); repeats are interleaved.  Two levels, in memory,
no sockets:

- C{dispatch}: L{CallDispatcher.receive} of one INVOKE of C{add(1, 2)} into
  a sink that drops the answers (the dispatcher alone);
- C{session}: one encoded frame with that INVOKE into the connection's
  C{ServerSession} (a L{twisted_hub.testing.HubTestServer} connection),
  decoded, run, answered, encoded and written to a sink.

Per variant and level: CPU microseconds per call (C{time.process_time}, the
best of 8 chunks of C{--calls} calls, garbage collected before each chunk),
median [min..max] over the repeats, and the ratio to C{before} within each
repeat.  No timing assertion: numbers only.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: main just before the filters were merged: the tree without filters
BEFORE_FILTERS = "ff23577"
#: the merge of the filters into main (its first parent is BEFORE_FILTERS): only the filters changed
FILTERS_MERGED = "e5d38fe"
VARIANTS = ("before", "merged", "after", "after+pass-through", "after+shipped")
#: one shipped filter at a time (C{--variants})
SINGLE_FILTERS = ("after+rate-limit", "after+call-timeout", "after+call-log")
LEVELS = ("dispatch", "session")
CHUNKS = 8


# -- the worker: runs in the variant's tree ---------------------------------------


def _worker(variant: str, calls: int) -> dict[str, Any]:
    import importlib

    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    import twisted_hub
    from twisted_hub import Hub, method
    from twisted_hub.testing import HubTestServer

    try:
        wire: Any = importlib.import_module("twisted_hub._core.wire")
    except ImportError:  # a tree from before the layer folders (the "before" and "merged" trees)
        wire = importlib.import_module("twisted_hub._wire")
    Invoke, encode = wire.Invoke, wire.encode

    null = open(os.devnull, "w")  # (open for the process's life)
    observer = FilteringLogObserver(textFileLogObserver(null), [LogLevelFilterPredicate(LogLevel.info)])
    globalLogBeginner.beginLoggingTo([observer], discardBuffer=True, redirectStandardIO=False)

    class BenchHub(Hub):
        hub_name = "bench"

        @method
        def add(self, a: int, b: int) -> int:
            return a + b

    filters: list[Any] = []
    if variant not in ("before", "merged", "after"):
        from twisted_hub.filters import CallLog, CallTimeout, HubFilter, RateLimit

        class PassThrough(HubFilter):
            def on_call(self, call: Any, proceed: Any) -> Any:
                return proceed(call)

        chains: dict[str, list[Any]] = {
            "after+pass-through": [PassThrough()],
            "after+shipped": [RateLimit(1e9, burst=1e9), CallLog(), CallTimeout(60)],
            "after+rate-limit": [RateLimit(1e9, burst=1e9)],
            "after+call-timeout": [CallTimeout(60)],
            "after+call-log": [CallLog()],
        }
        filters = chains[variant]

    class Sink:
        def answer_result(self, call_id: int, method: str, value: Any) -> bool:
            return True  # answered (the trees before and after take the same arguments)

        def answer_error(self, call_id: int, code: str, message: str, detail: Any = None) -> None:
            raise AssertionError(f"error answer: {code} {message}")

        def peer_mistake(self, format: str, **fields: Any) -> None:
            raise AssertionError(format)

        def method_crashed(self, method: str, failure: Any) -> None:
            raise AssertionError(failure)

        def call_failed(self, format: str, **fields: Any) -> None:
            raise AssertionError(format)

        def hold_answers(self) -> None:
            pass

        def release_answers(self) -> None:
            pass

    def best(run: Any) -> float:
        timings = []
        for _ in range(CHUNKS):
            gc.collect()
            start = time.process_time()
            run()
            timings.append(time.process_time() - start)
        return min(timings) / calls * 1e6

    # the dispatcher alone
    server = HubTestServer([BenchHub], filters=filters) if filters else HubTestServer([BenchHub])
    conn = server.connect("bench")
    session = conn.server_protocol.session
    assert session is not None and conn.client.ready.called
    dispatcher = session.dispatcher
    answers = Sink()
    dispatcher.answers = answers
    invocation = Invoke(1, "add", [1, 2], None)

    def dispatch() -> None:
        receive = dispatcher.receive
        for _ in range(calls):
            receive(invocation, 20)

    results = {"dispatch": best(dispatch), "dispatcher": type(dispatcher).__name__}
    assert dispatcher.calls == calls * CHUNKS and dispatcher.errors == 0

    # the whole server side of one call
    server = HubTestServer([BenchHub], filters=filters) if filters else HubTestServer([BenchHub])
    conn = server.connect("bench")
    session = conn.server_protocol.session
    assert session is not None
    sent: list[int] = [0]

    def sink(frame: bytes, urgent: bool = False) -> None:
        sent[0] += 1

    # where answers leave for the transport: the session itself before the sans-IO server
    # core (issue 23), its SessionOutput since
    output: Any = session.out if hasattr(session, "out") else session
    output._send_frame = sink
    frame = encode(Invoke(7, "add", [1, 2], None))

    def whole() -> None:
        receive = session.receive
        for _ in range(calls):
            receive(frame, True)

    results["session"] = best(whole)
    assert sent[0] == calls * CHUNKS, sent
    results["tree"] = os.path.dirname(os.path.dirname(twisted_hub.__file__))
    return results


# -- the runner -----------------------------------------------------------------


def _export(rev: str, into: str) -> str:
    """The tree of commit C{rev}, exported into C{into} (the repository is only read)."""
    os.makedirs(into)
    archive = os.path.join(into, "tree.tar")
    with open(archive, "wb") as out:
        subprocess.run(["git", "-C", ROOT, "archive", "--format=tar", rev], stdout=out, check=True)
    tree = os.path.join(into, "tree")
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    return tree


def _run_variant(variant: str, tree: str, calls: int) -> dict[str, Any]:
    environment = dict(os.environ, PYTHONPATH=tree, PYTHONHASHSEED="0")
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker", variant, "--calls", str(calls)],
        env=environment, cwd=tree, capture_output=True, text=True, timeout=600, check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _spread(values: list[float], digits: int = 2) -> str:
    return f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f}..{max(values):.{digits}f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default=BEFORE_FILTERS, help=f"commit of the tree without filters [{BEFORE_FILTERS}]")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20_000, help="calls per chunk (best of 8 chunks)")
    parser.add_argument("--merged", default=FILTERS_MERGED, help=f"commit that added the filters [{FILTERS_MERGED}]")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS[2:] + SINGLE_FILTERS, default=list(VARIANTS[2:]))
    parser.add_argument("--record", metavar="PATH", help="also write the results as JSON to PATH (docs/performance.md)")
    parser.add_argument("--note", default="", help="what the recorded run was (machine state, why it was run)")
    parser.add_argument("--worker", choices=VARIANTS + SINGLE_FILTERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker, args.calls)))
        return

    if args.record and (args.repeats < 3 or not args.note):
        raise SystemExit("--record needs --repeats 3 or more and a --note")
    before = subprocess.run(
        ["git", "-C", ROOT, "rev-parse", args.before], capture_output=True, text=True, check=True
    ).stdout.strip()
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    merged = subprocess.run(
        ["git", "-C", ROOT, "rev-parse", args.merged], capture_output=True, text=True, check=True
    ).stdout.strip()
    variants = ["before", "merged", *args.variants]
    with tempfile.TemporaryDirectory() as scratch:
        trees = {variant: ROOT for variant in variants}
        trees["before"] = _export(before, os.path.join(scratch, "before"))
        trees["merged"] = _export(merged, os.path.join(scratch, "merged"))
        rows: dict[str, dict[str, list[float]]] = {v: {level: [] for level in LEVELS} for v in variants}
        dispatchers: dict[str, str] = {}
        for repeat in range(args.repeats):
            for variant in variants:
                result = _run_variant(variant, trees[variant], args.calls)
                dispatchers[variant] = result["dispatcher"]
                for level in LEVELS:
                    rows[variant][level].append(result[level])
            print(f"repeat {repeat + 1}/{args.repeats} done", file=sys.stderr, flush=True)
    print(f"before: {before[:7]}, merged: {merged[:7]} (both exported, no filters), after: {head} (this tree, "
          "uncommitted changes included); "
          f"{args.calls} calls per chunk, best of {CHUNKS} chunks, {args.repeats} repeats interleaved")
    print(f"{'variant':<20} {'dispatcher':<22} " + " ".join(f"{level + ' us/call':>24} {'/ before':>18}"
                                                            for level in LEVELS))
    for variant in variants:
        cells = []
        for level in LEVELS:
            values = rows[variant][level]
            ratios = [value / base for value, base in zip(values, rows["before"][level], strict=True)]
            cells.append(f"{_spread(values):>24} {_spread(ratios):>18}")
        print(f"{variant:<20} {dispatchers[variant]:<22} " + " ".join(cells))
    if args.record:
        record(args, before, merged, head, variants, rows, dispatchers)


def record(
    args: Any, before: str, merged: str, head: str, variants: list[str], rows: dict[str, dict[str, list[float]]],
    dispatchers: dict[str, str],
) -> None:
    """
    The run as JSON: C{filter_ratios} (each variant over C{before}, per level,
    median [min..max] of the ratios within each repeat) is what
    bench/_results.ratio_strings reads to check the ratios docs/performance.md quotes.
    """
    ratios = {}
    for variant in variants[1:]:
        for level in LEVELS:
            values = [v / b for v, b in zip(rows[variant][level], rows["before"][level], strict=True)]
            ratios[f"{variant} {level}"] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    document = {
        "bench": "filters",
        "command": "python3 bench/filters.py " + " ".join(sys.argv[1:]),
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": head,
        "before": before[:7],
        "merged": merged[:7],
        "load_average": os.getloadavg(),
        "python": sys.version.split()[0],
        "note": args.note,
        "calls": args.calls,
        "chunks": CHUNKS,
        "repeats": args.repeats,
        "dispatchers": dispatchers,
        "us_per_call": rows,
        "filter_ratios": ratios,
    }
    with open(args.record, "w", encoding="utf-8") as f:
        json.dump(document, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
