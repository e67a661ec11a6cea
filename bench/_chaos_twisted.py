"""
Chaos clients on Twisted (bench/chaos.py): ``ReconnectingHubClient`` with
``HubClientOptions(resume=True)``, K of them in this process.  Commands on
stdin (``go``, ``hush``, ``stop``, ``expect {json}``), JSON lines out (``ready``, ``hushed``,
``stopped``, ``result``); bench/_chaos_ledger.py keeps what each one saw.
"""

from __future__ import annotations

import json
import os
import random
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _chaos_ledger import Ledger, arguments, refusal_reasons, say  # noqa: E402
from twisted.internet import defer, stdio, task  # noqa: E402
from twisted.protocols.basic import LineReceiver  # noqa: E402

from twisted_hub import HubClientOptions, ReconnectingHubClient, full_jitter_policy  # noqa: E402


class Receiver:
    def __init__(self, ledger: Ledger, changed: Any) -> None:
        self.ledger = ledger
        self.changed = changed

    def numbered(self, session: str, k: int) -> None:
        self.ledger.numbered(session, k)

    def heard(self, sender: str, m: int) -> None:
        self.ledger.heard_from(sender, m)
        self.changed()


class Client:
    def __init__(self, reactor: Any, name: str, args: Any, rng: random.Random, changed: Any) -> None:
        self.reactor = reactor
        self.name = name
        self.args = args
        self.rng = rng
        self.ledger = Ledger(name)
        self.first_join: defer.Deferred[None] = defer.Deferred()
        self.refusals_seen: dict[str, int] = {}
        policy = full_jitter_policy(args.retry_initial, args.retry_max, rng=random.Random(rng.random()))
        self.service = ReconnectingHubClient(
            args.url, "chaos", Receiver(self.ledger, changed), HubClientOptions(resume=True),
            on_connected=self.on_connected, on_resumed=self.on_resumed,
            on_disconnected=lambda reason: self.ledger.dropped(),
            retry_policy=lambda attempt: self.ledger.retry_delay(policy(attempt)),
            clock=reactor, handshake_timeout=5.0, wait_for_connection=args.settle,
        )

    def on_connected(self, client: Any) -> defer.Deferred[None]:
        now = self.service.resume_refusals
        self.ledger.fresh_session(refusal_reasons(self.refusals_seen, now))
        self.refusals_seen = now

        def joined(session: str) -> None:
            self.ledger.joined(session)
            if not self.first_join.called:
                self.first_join.callback(None)

        joining: defer.Deferred[None] = client.call("join").addCallback(joined)
        return joining

    def on_resumed(self, client: Any) -> None:
        self.ledger.resumed()

    async def work_loop(self, running: list[bool]) -> None:
        while running[0]:
            n = self.ledger.next_call()
            try:
                result = await self.service.call("work", self.name, n)
            except Exception as e:
                self.ledger.call_failed(n, e)
            else:
                self.ledger.answer(n, result)
            await task.deferLater(self.reactor, self.args.pace * (0.5 + self.rng.random()), lambda: None)

    async def shout_loop(self, running: list[bool]) -> None:
        await task.deferLater(self.reactor, self.args.shout_every * self.rng.random(), lambda: None)
        while running[0]:
            m = self.ledger.next_shout()
            try:
                await self.service.call("shout", self.name, m)
            except Exception:
                self.ledger.shout_failed(m)
            else:
                self.ledger.shout_answered(m)
            await task.deferLater(self.reactor, self.args.shout_every * (0.5 + self.rng.random()), lambda: None)


class Commands(LineReceiver):
    delimiter = b"\n"

    def __init__(self, run: Run) -> None:
        self.run = run

    def lineReceived(self, line: bytes) -> None:
        self.run.command(line.decode().strip())

    def connectionLost(self, reason: Any = None) -> None:
        self.run.command("quit")


class Run:
    def __init__(self, reactor: Any, args: Any) -> None:
        self.reactor = reactor
        self.args = args
        rng = random.Random(args.seed)
        self.clients = [Client(reactor, f"{args.prefix}-{i}", args, rng, self.changed) for i in range(args.count)]
        self.running = [False]
        self.loops: list[defer.Deferred[None]] = []
        self.expected: dict[str, int] | None = None
        self.all_heard: defer.Deferred[None] = defer.Deferred()
        self.done: defer.Deferred[None] = defer.Deferred()

    def changed(self) -> None:
        if self.expected is not None and not self.all_heard.called:
            if all(c.ledger.missing_from(self.expected) == 0 for c in self.clients):
                self.all_heard.callback(None)

    def command(self, line: str) -> None:
        word, _, rest = line.partition(" ")
        if word == "go":
            self.running[0] = True
            for client in self.clients:
                for _ in range(self.args.inflight):
                    self.loops.append(defer.ensureDeferred(client.work_loop(self.running)))
                self.loops.append(defer.ensureDeferred(client.shout_loop(self.running)))
        elif word == "hush":
            defer.ensureDeferred(self.hush())
        elif word == "stop":
            defer.ensureDeferred(self.stop())
        elif word == "expect":
            defer.ensureDeferred(self.expect(json.loads(rest)))
        elif word == "quit" and not self.done.called:
            self.done.callback(None)

    async def start(self) -> None:
        for client in self.clients:
            client.service.start()
        await defer.gatherResults([c.first_join for c in self.clients]).addTimeout(60, self.reactor)
        say("ready", clients=len(self.clients))

    async def hush(self) -> None:
        """A lull: no new call or broadcast until the next "go"; said once what is in flight settled."""
        self.running[0] = False
        settling, self.loops = defer.DeferredList(self.loops), []
        settling.addTimeout(self.args.settle + 5, self.reactor)
        try:
            await settling
        except defer.TimeoutError:
            pass  # what is still pending is reported as hanging at the end
        say("hushed")

    async def stop(self) -> None:
        self.running[0] = False
        settling = defer.DeferredList(self.loops)
        settling.addTimeout(self.args.settle + 5, self.reactor)
        try:
            await settling
        except defer.TimeoutError:
            pass  # what is still pending is reported as hanging
        say("stopped", last={c.name: c.ledger.shouts_answered_max for c in self.clients})

    async def expect(self, expected: dict[str, int]) -> None:
        self.expected = expected
        self.changed()
        try:
            await self.all_heard.addTimeout(20, self.reactor)
        except defer.TimeoutError:
            pass  # what did not come is reported as missing
        for client in self.clients:
            client.ledger.stopping = True
        say("result", clients=[
            c.ledger.summary("twisted", c.service.resumes, c.service.resume_refusals, expected)
            for c in self.clients
        ])
        await defer.DeferredList([defer.ensureDeferred(_stop(c.service)) for c in self.clients])
        if not self.done.called:
            self.done.callback(None)


async def _stop(service: ReconnectingHubClient) -> None:
    await service.stop()


async def main(reactor: Any) -> None:
    args = arguments(__doc__ or "")
    run = Run(reactor, args)
    # (StandardIO makes the descriptors it is given non-blocking: fd 1 stays blocking, so that a long
    # JSON line is written whole by say())
    stdio.StandardIO(Commands(run), stdout=os.open(os.devnull, os.O_WRONLY))
    await run.start()
    await run.done


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
