"""
The fault injector of the chaos test (bench/chaos.py): a TCP proxy on
127.0.0.1 in front of haproxy (tests/_cutting_proxy.py's L{CuttingProxy})
that, once told ``go``, resets a random open connection at random times
(exponential gaps, ``--rate`` cuts a second on average): most cuts reset
both halves (RST to the client and to haproxy), a share (``--half-share``)
resets only the client's half and leaves haproxy's open and silent, a path
that died without telling the server.  ``pause`` / ``unpause`` hold the
cuts (around a node's kill); ``stop`` ends them and prints the counts.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import defer, stdio, task  # noqa: E402
from twisted.protocols.basic import LineReceiver  # noqa: E402

from tests._cutting_proxy import CuttingProxy  # noqa: E402


def say(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


class Cutter(LineReceiver):
    delimiter = b"\n"

    def __init__(self, reactor: Any, proxy: CuttingProxy, args: Any) -> None:
        self.reactor = reactor
        self.proxy = proxy
        self.args = args
        self.rng = random.Random(args.seed)
        self.cutting = False
        self.held = False
        self.pending: Any = None
        self.cuts = 0
        self.half_cuts = 0
        self.nothing_to_cut = 0
        self.done: defer.Deferred[None] = defer.Deferred()

    def lineReceived(self, line: bytes) -> None:
        word = line.decode().strip()
        if word == "go":
            self.cutting = True
            self.schedule()
        elif word == "pause":
            self.held = True
            say("paused", cuts=self.cuts + self.half_cuts)
        elif word == "unpause":
            self.held = False
            say("unpaused")
        elif word == "stop":
            self.cutting = False
            if self.pending is not None and self.pending.active():
                self.pending.cancel()
            say("cutter", cuts=self.cuts, half_cuts=self.half_cuts, nothing_to_cut=self.nothing_to_cut,
                accepts=self.proxy.accepts, most_open=self.proxy.most_open, open=len(self.proxy.live))
        elif word == "quit" and not self.done.called:
            self.done.callback(None)

    def connectionLost(self, reason: Any = None) -> None:
        if not self.done.called:
            self.done.callback(None)

    def schedule(self) -> None:
        gap = min(self.rng.expovariate(self.args.rate), 10.0 / self.args.rate)
        self.pending = self.reactor.callLater(gap, self.cut_one)

    def cut_one(self) -> None:
        if not self.cutting:
            return
        if not self.held:
            live = [connection for connection in self.proxy.live if connection.upstream is not None]
            if not live:
                self.nothing_to_cut += 1
            elif self.rng.random() < self.args.half_share:
                self.rng.choice(live).cut_client_side()
                self.half_cuts += 1
            else:
                self.rng.choice(live).cut()
                self.cuts += 1
        self.schedule()


async def main(reactor: Any) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("target_port", type=int, help="haproxy's port on 127.0.0.1")
    parser.add_argument("--rate", type=float, required=True, help="cuts a second, on average")
    parser.add_argument("--half-share", type=float, default=0.2, help="share of cuts that reset the client's half only")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    proxy = CuttingProxy(reactor, args.target_port)
    port = reactor.listenTCP(0, proxy, interface="127.0.0.1", backlog=1024)
    cutter = Cutter(reactor, proxy, args)
    # (StandardIO makes the descriptors it is given non-blocking: fd 1 stays blocking for say())
    stdio.StandardIO(cutter, stdout=os.open(os.devnull, os.O_WRONLY))
    say("ready", port=port.getHost().port)
    await cutter.done


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
