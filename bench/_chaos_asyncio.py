"""
Chaos clients on asyncio (bench/chaos.py): ``twisted_hub.aio.ReconnectingAsyncHubClient``
with ``HubClientOptions(resume=True)``, K of them in this process.  Commands
on stdin (``go``, ``hush``, ``stop``, ``expect {json}``), JSON lines out (``ready``, ``hushed``,
``stopped``, ``result``); bench/_chaos_ledger.py keeps what each one saw.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _chaos_ledger import Ledger, arguments, refusal_reasons, say  # noqa: E402

from twisted_hub import HubClientOptions, full_jitter_policy  # noqa: E402
from twisted_hub.aio import AsyncHubClient, ReconnectingAsyncHubClient  # noqa: E402


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
    def __init__(self, name: str, args: Any, rng: random.Random, changed: Any) -> None:
        self.name = name
        self.args = args
        self.rng = rng
        self.ledger = Ledger(name)
        self.first_join = asyncio.Event()
        self.refusals_seen: dict[str, int] = {}
        self.watchers: set[asyncio.Task[None]] = set()
        policy = full_jitter_policy(args.retry_initial, args.retry_max, rng=random.Random(rng.random()))
        self.service = ReconnectingAsyncHubClient(
            args.url, "chaos", Receiver(self.ledger, changed), HubClientOptions(resume=True),
            on_connected=self.on_connected, on_resumed=self.on_resumed,
            retry_policy=lambda attempt: self.ledger.retry_delay(policy(attempt)),
            timeout=5.0, wait_for_connection=args.settle,
        )

    def watch(self, client: AsyncHubClient) -> None:
        """Note when this connection drops (the client has no on_disconnected hook)."""
        async def watching() -> None:
            await client.wait_for_disconnect()
            self.ledger.dropped()

        watcher = asyncio.ensure_future(watching())
        self.watchers.add(watcher)
        watcher.add_done_callback(self.watchers.discard)

    async def on_connected(self, client: AsyncHubClient) -> None:
        self.watch(client)
        now = self.service.resume_refusals
        self.ledger.fresh_session(refusal_reasons(self.refusals_seen, now))
        self.refusals_seen = now
        self.ledger.joined(await client.call("join"))
        self.first_join.set()

    def on_resumed(self, client: AsyncHubClient) -> None:
        self.watch(client)
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
            await asyncio.sleep(self.args.pace * (0.5 + self.rng.random()))

    async def shout_loop(self, running: list[bool]) -> None:
        await asyncio.sleep(self.args.shout_every * self.rng.random())
        while running[0]:
            m = self.ledger.next_shout()
            try:
                await self.service.call("shout", self.name, m)
            except Exception:
                self.ledger.shout_failed(m)
            else:
                self.ledger.shout_answered(m)
            await asyncio.sleep(self.args.shout_every * (0.5 + self.rng.random()))


class Run:
    def __init__(self, args: Any) -> None:
        self.args = args
        rng = random.Random(args.seed)
        self.clients = [Client(f"{args.prefix}-{i}", args, rng, self.changed) for i in range(args.count)]
        self.running = [False]
        self.loops: list[asyncio.Future[None]] = []
        self.expected: dict[str, int] | None = None
        self.all_heard = asyncio.Event()

    def changed(self) -> None:
        if self.expected is not None and not self.all_heard.is_set():
            if all(c.ledger.missing_from(self.expected) == 0 for c in self.clients):
                self.all_heard.set()

    async def start(self) -> None:
        for client in self.clients:
            client.service.start()
        await asyncio.wait_for(asyncio.gather(*(c.first_join.wait() for c in self.clients)), 60)
        say("ready", clients=len(self.clients))

    def go(self) -> None:
        self.running[0] = True
        for client in self.clients:
            for _ in range(self.args.inflight):
                self.loops.append(asyncio.ensure_future(client.work_loop(self.running)))
            self.loops.append(asyncio.ensure_future(client.shout_loop(self.running)))

    async def hush(self) -> None:
        """A lull: no new call or broadcast until the next "go"; said once what is in flight settled."""
        self.running[0] = False
        loops, self.loops = self.loops, []
        if loops:
            await asyncio.wait(loops, timeout=self.args.settle + 5)  # (what is still pending: hanging at the end)
        say("hushed")

    async def stop(self) -> None:
        self.running[0] = False
        # what is still pending past the deadline is reported as hanging
        await asyncio.wait(self.loops, timeout=self.args.settle + 5)
        say("stopped", last={c.name: c.ledger.shouts_answered_max for c in self.clients})

    async def expect(self, expected: dict[str, int]) -> None:
        self.expected = expected
        self.changed()
        try:
            await asyncio.wait_for(self.all_heard.wait(), 20)
        except TimeoutError:
            pass  # what did not come is reported as missing
        for client in self.clients:
            client.ledger.stopping = True
        say("result", clients=[
            c.ledger.summary("asyncio", c.service.resumes, c.service.resume_refusals, expected)
            for c in self.clients
        ])
        await asyncio.gather(*(c.service.stop() for c in self.clients), return_exceptions=True)


async def main() -> None:
    args = arguments(__doc__ or "")
    run = Run(args)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await run.start()
    while line := (await reader.readline()).decode():
        word, _, rest = line.strip().partition(" ")
        if word == "go":
            run.go()
        elif word == "hush":
            await run.hush()
        elif word == "stop":
            await run.stop()
        elif word == "expect":
            await run.expect(json.loads(rest))
            return
        elif word == "quit":
            return


if __name__ == "__main__":
    asyncio.run(main())
