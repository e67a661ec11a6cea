"""
Python function calls per RPC round trip, for two trees side by side: a
deterministic measure of the library's work per call that a busy machine does
not blur (the timed benches of bench/run.py scatter by tens of percent when
other processes share the cores).

    python3 bench/calls_per_rpc.py BEFORE [AFTER]

BEFORE and AFTER are git revisions (AFTER: the working tree when left out).
Each tree's ``twisted_hub`` runs in a fresh interpreter: the demo's echo hub
and the Twisted client, in memory (``twisted_hub.testing``, the fast path on),
300 calls to warm up, then 3,000 calls under ``cProfile``.  Printed per
round trip (client and server together): every Python function call, those
of twisted-hub's own modules, and the CPU time of the best of 5 x 5,000
unprofiled round trips (that one is timing, so noisy).  No sockets.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MEASURE = r"""
import cProfile, pstats, time
import twisted_hub
from twisted_hub.demo import EchoHub
from twisted_hub.testing import HubTestServer

server = HubTestServer([EchoHub])
connection = server.connect("echo")
ready = []
connection.ready.addCallback(ready.append)
server.flush()
(client,) = ready
answers = []

def run(n):
    for _ in range(n):
        client.call("echo", "x").addCallback(answers.append)
        server.flush()

run(300)
profile = cProfile.Profile()
profile.enable()
run(3000)
profile.disable()
assert len(answers) == 3300, len(answers)
package = os.path.dirname(twisted_hub.__file__)
calls = own = 0
for (path, _, _), (_, count, _, _, _) in pstats.Stats(profile).stats.items():
    calls += count
    own += count if path.startswith(package) else 0
best = float("inf")
for _ in range(5):
    started = time.process_time()
    run(5000)
    best = min(best, time.process_time() - started)
print(f"{calls / 3000:.1f} {own / 3000:.1f} {best / 5000 * 1e6:.1f}")
"""


def tree(revision: str | None, into: str) -> str:
    """A directory holding C{twisted_hub} at C{revision} (None: the working tree)."""
    if revision is None:
        return ROOT
    archive = os.path.join(into, "tree.tar")
    subprocess.run(["git", "archive", "-o", archive, revision, "twisted_hub"], cwd=ROOT, check=True)
    target = os.path.join(into, "tree")
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    return target


def measure(directory: str) -> tuple[float, float, float]:
    done = subprocess.run(
        [sys.executable, "-c", "import os\n" + MEASURE], capture_output=True, text=True, timeout=600, check=True,
        cwd=tempfile.gettempdir(), env={**os.environ, "PYTHONPATH": directory},
    )
    calls, own, cpu = (float(n) for n in done.stdout.split())
    return calls, own, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", help="a git revision")
    parser.add_argument("after", nargs="?", help="a git revision (default: the working tree)")
    args = parser.parse_args()
    rows = []
    for label, revision in (("before", args.before), ("after", args.after)):
        with tempfile.TemporaryDirectory() as scratch:
            rows.append((f"{label} ({revision or 'working tree'})", *measure(tree(revision, scratch))))
    print(f"{'tree':40} {'calls/round trip':>17} {'of twisted_hub':>15} {'CPU us (noisy)':>15}")
    for name, calls, own, cpu in rows:
        print(f"{name:40} {calls:17.1f} {own:15.1f} {cpu:15.1f}")


if __name__ == "__main__":
    main()
