"""
What session resumption costs while nothing goes wrong (issue 21): the hub
with resume off and on, side by side, interleaved, on the cases of
bench/run.py that show a per-message cost.

    python3 bench/resume_cost.py [--quick] [--repeats 3] [--record NAME]

- ``rpc1``: round trips with one call in flight, the Twisted client; with
  resume on, a ``ReconnectingHubClient(HubClientOptions(resume=True))``: each
  call and each answer is numbered and kept until acknowledged, and every
  call id passes the server's deduplicator.
- ``fanout``: one group of 500 members, 200 broadcasts of 100 bytes, one
  per reactor turn; with resume on, every member announced ``resume`` and
  acknowledges every 256 messages, as the clients do by default
  (``bench/_wsload.py``; ``BENCH_HUB_ACK_EVERY`` sets another count): each
  delivery is numbered, and kept once per group (a broadcast log,
  twisted_hub/_core/replay_log.py).  The full form sends 1,024 broadcasts
  (bench/run.py's case: 200), so that every member acknowledges by count
  four times and their cost is in the figures; ``--quick`` keeps the small
  case.

Ratio = resume on / resume off, per repeat (issue 21's bound: within 10 %,
that is >= 0.9 for throughput, <= 1.1 for server CPU per message).  Loopback
only; every process ends by its PID (bench/run.py's Processes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _common import library_versions  # noqa: E402
from _results import fmt_spread, spread  # noqa: E402
from run import PRIMARY, SECONDARY, BenchError, Settings, git_commit, quick_settings, run_case  # noqa: E402

CASES = ("rpc1", "fanout")
#: broadcasts of the full form's fan-out (bench/run.py's case has 200)
FANOUT_MESSAGES = 1024
IMPLS = ("hub", "hub-resume")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny N, short windows, 1 repeat")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--record", metavar="NAME", help="also write bench/results/recorded/NAME.json")
    parser.add_argument("--note", default="", help="a note kept in the result file (e.g. what else loaded the machine)")
    args = parser.parse_args()
    s = quick_settings() if args.quick else Settings()
    s.repeats = args.repeats or (1 if args.quick else 3)
    if not args.quick:
        # enough broadcasts that every member acknowledges by count (4 ACKs each at the default
        # 256), so that their cost is in the figures, as it is in a long fan-out
        s.fanout_messages = FANOUT_MESSAGES
    started, load_before = time.time(), os.getloadavg()
    runs: dict[str, dict[str, list[dict[str, float] | None]]] = {case: {impl: [] for impl in IMPLS} for case in CASES}
    failures: list[str] = []
    for repeat in range(s.repeats):
        for case in CASES:
            order = IMPLS if repeat % 2 == 0 else tuple(reversed(IMPLS))
            for impl in order:
                try:
                    result: dict[str, float] | None = run_case(case, impl, s)
                except BenchError as e:
                    failures.append(f"repeat {repeat + 1} {case} {impl}: {e}")
                    result = None
                runs[case][impl].append(result)
                print(f"repeat {repeat + 1} {case} {impl}: {json.dumps(result)}", flush=True)
    command = "python3 bench/resume_cost.py" + (" --quick" if args.quick else "")
    command += f" --repeats {args.repeats}" if args.repeats else ""
    lines = [f"# command: {command}", f"# {s.repeats} interleaved repeat(s); median [min..max]; ratio = resume on / off"]
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for case in CASES:
        lines.append(f"== {case}")
        entry: dict[str, dict[str, Any]] = {"metrics": {}, "ratios": {}}
        for metric, _, label in [PRIMARY[case]] + SECONDARY[case]:
            pairs = [(a, b) for a, b in zip(runs[case]["hub"], runs[case]["hub-resume"], strict=True) if a and b]
            off = [a[metric] for a, _ in pairs]
            on = [b[metric] for _, b in pairs]
            ratios = [b / a for a, b in zip(off, on, strict=True) if a > 0]
            entry["metrics"][metric] = {"hub": spread(off) if off else None, "hub-resume": spread(on) if on else None}
            # (here the ratio is resume on / off: hub-resume's figure / hub's, per repeat)
            entry["ratios"][metric] = {"hub-resume": spread(ratios) if ratios else None}
            lines.append(f"  {label:<28} off={fmt_spread(entry['metrics'][metric]['hub'])}  "
                         f"on={fmt_spread(entry['metrics'][metric]['hub-resume'])}  "
                         f"on/off={fmt_spread(entry['ratios'][metric]['hub-resume'])}")
        summary[case] = entry
    lines += [f"  FAILED {f}" for f in failures]
    print("\n".join(lines))
    document = {
        "bench": "resume_cost",
        "command": command,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": time.time() - started,
        "quick": args.quick,
        "note": args.note or "session resumption off (hub) and on (hub-resume), side by side",
        "commit": git_commit(),
        "impls": list(IMPLS),
        "settings": asdict(s),
        "versions": library_versions(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "loadavg_before": load_before, "loadavg": os.getloadavg()},
        "method": "each ratio = hub-resume's figure / hub's within one repeat (resume on / off; repeats "
                  "interleaved, the order alternating); spreads = median, min, max over repeats",
        "runs": runs,
        "summary": summary,
        "failures": failures,
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "resume_cost.json"), "w") as f:
        json.dump(document, f, indent=1)
    if args.record:
        with open(os.path.join(args.out, "recorded", f"{args.record}.json"), "w") as f:
            json.dump(document, f, indent=1)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
