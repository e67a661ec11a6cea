"""
C{twistd hub --workers N}: N hub processes serving one port on one machine.

The parent (the supervisor) binds the listening sockets and keeps them
open for its whole life: per C{--listen} description, one C{SO_REUSEPORT}
socket per worker, all bound to the same address, so the Linux kernel
spreads new connections over them (by a hash of each connection's
addresses).  Each worker is a C{twistd hub} child process that adopts its
sockets (passed with C{spawnProcess}'s C{childFDs};
L{AdoptedStreamServerEndpoint}, i.e. C{reactor.adoptStreamPort}), and joins
the others through the Redis backplane.  Because the parent holds every
socket, a worker that restarts or dies loses nothing queued on its socket:
the connections wait in the kernel's backlog until the next worker of that
slot accepts them, and a rolling restart starts the new worker on the slot's
sockets before the old one drains.

Why this and not the alternatives: a single socket shared by every worker
(the usual way to pass one port to child processes) balances badly on Linux, where the
process that happens to be waiting in C{accept} takes a whole burst;
workers binding C{SO_REUSEPORT} themselves lose the connections queued on a
worker's socket when it closes it (a restart resets them) and cannot share
a C{tcp:0} port.  Holding per-worker C{SO_REUSEPORT} sockets in the parent
has the kernel's balance and neither loss.  Only Linux balances
C{SO_REUSEPORT} sockets (the BSDs and macOS give each connection to one of
them, not spread); other platforms get a usage error.

Each worker also serves C{/metrics}, C{/health} and C{/status.json} of its
own on a private 127.0.0.1 port (a socket the parent holds too, so the port
stays the same across restarts); C{/metrics} on the public port, whichever
worker answers, gathers every worker's metrics with a C{worker} label.

Layer: ops/glue (processes, sockets, signals; nothing of the protocol).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from twisted.application.service import IServiceCollection, MultiService, Service
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.endpoints import AdoptedStreamServerEndpoint
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorProcess, IReactorTime
from twisted.internet.protocol import ProcessProtocol, Protocol, connectionDone
from twisted.logger import Logger, eventFromJSON, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.http import Request as HTTPRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from .._support.logging import HUB_LOG_OBSERVER

#: The environment variable that makes a C{twistd hub} process a worker (set by the supervisor).
WORKER_ENVIRONMENT = "TWISTED_HUB_WORKER"
#: The first restart of a worker that died waits this long; each further one in a row twice as long...
RESTART_DELAY = 0.5
#: ... up to this bound.
MAX_RESTART_DELAY = 30.0
#: A worker that served this long before it died starts the delays afresh.
HEALTHY_AFTER = 30.0
#: Seconds a new worker may take to say it is listening (rolling restarts wait for it).
READY_TIMEOUT = 30.0
#: Seconds C{/metrics} waits for the other workers' metrics.
METRICS_TIMEOUT = 2.0
#: The accept backlog of each socket (Twisted's default for C{tcp:} endpoints).
DEFAULT_BACKLOG = 50

# child file descriptors: 0-2 standard streams, then the control pipe (parent -> worker; its end
# means the parent is gone), the status pipe (worker -> parent: "ready"), the sockets.
_CONTROL_FD = 3
_STATUS_FD = 4
_FIRST_SOCKET_FD = 5
#: what the supervisor writes on a worker's control pipe to stop it in a rolling restart
REPLACED = b"replaced\n"

#: through twisted-hub's level filter (twistd hub --log-level), as every line of ours
_log = Logger(namespace="twisted_hub.workers", observer=HUB_LOG_OBSERVER)
#: how a worker is signalled (tests replace it: they must never signal a real process by a made-up pid)
_kill = os.kill


class WorkersUnavailable(Exception):
    """C{--workers} cannot run here (the platform, or a setting that does not fit)."""


def check_platform(platform: str | None = None) -> None:
    """
    @raise WorkersUnavailable: this platform has no load-balancing C{SO_REUSEPORT}.
    """
    platform = sys.platform if platform is None else platform
    if not platform.startswith("linux") or not hasattr(socket, "SO_REUSEPORT"):
        raise WorkersUnavailable(
            f"--workers needs Linux (the kernel spreads connections over SO_REUSEPORT sockets); this is {platform}: "
            "run one 'twistd hub --port N --redis URL' per core, each on its own port, behind a load balancer "
            "(docs/scaling.md)"
        )


@dataclass(frozen=True)
class TCPAddress:
    """Where a C{tcp:}/C{tcp6:} listen description binds."""

    family: int
    interface: str
    port: int
    backlog: int


def tcp_address(description: str) -> TCPAddress:
    """
    The address of a C{tcp:} or C{tcp6:} strports description.

    @raise WorkersUnavailable: another kind of endpoint (C{ssl:}, C{unix:}...).
    """
    fields = [f.replace("\\:", ":") for f in re.split(r"(?<!\\):", description)]
    kind = fields[0].strip().lower()
    if kind not in ("tcp", "tcp6"):
        raise WorkersUnavailable(
            f"--workers serves tcp: listeners only, not {description!r}: terminate TLS in front "
            "(nginx, docs/deploying.md) or run without --workers"
        )
    settings: dict[str, str] = {}
    positional: list[str] = []
    for value in fields[1:]:
        name, equals, rest = value.partition("=")
        if equals:
            settings[name] = rest
        else:
            positional.append(value)
    port = int(settings.get("port", positional[0] if positional else "0"))
    interface = settings.get("interface", "::" if kind == "tcp6" else "")
    family = socket.AF_INET6 if kind == "tcp6" or ":" in interface else socket.AF_INET
    if family == socket.AF_INET and not interface:
        interface = "0.0.0.0"
    return TCPAddress(family, interface, port, int(settings.get("backlog", DEFAULT_BACKLOG)))


def bind_group(address: TCPAddress, count: int) -> list[socket.socket]:
    """
    C{count} listening C{SO_REUSEPORT} sockets on one address (a port 0 is
    chosen by the first bind, then shared).

    @raise CannotListenError: the address cannot be bound.
    """
    sockets: list[socket.socket] = []
    port = address.port
    try:
        for _ in range(count):
            listener = socket.socket(address.family, socket.SOCK_STREAM)
            sockets.append(listener)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            listener.bind((address.interface, port))
            listener.listen(address.backlog)
            port = listener.getsockname()[1]
    except OSError as e:
        for listener in sockets:
            listener.close()
        raise CannotListenError(address.interface, port, e) from None
    return sockets


@dataclass(frozen=True)
class RestartBackoff:
    """
    When to restart a worker that died: C{first} seconds after its first
    death in a row, doubling per death up to C{bound}; a worker that served
    C{healthy_after} seconds starts afresh.  Pure: the supervisor keeps the count.
    """

    first: float = RESTART_DELAY
    bound: float = MAX_RESTART_DELAY
    healthy_after: float = HEALTHY_AFTER

    def failures_after(self, failures: int, served: float) -> int:
        """The deaths in a row, counting this one, of a worker that served C{served} seconds."""
        return 1 if served >= self.healthy_after else failures + 1

    def delay(self, failures: int) -> float:
        """Seconds to wait before restarting after C{failures} deaths in a row (>= 1)."""
        return float(min(self.bound, self.first * 2 ** min(max(failures - 1, 0), 32)))


@dataclass(frozen=True)
class WorkerSettings:
    """What the supervisor tells a worker (in C{TWISTED_HUB_WORKER}, JSON)."""

    index: int
    count: int
    #: the address family of each listen socket, in C{--listen} order (fds from 5 on)
    families: tuple[int, ...]
    #: the private 127.0.0.1 port of every worker, by index (C{/metrics} gathers them)
    admin_ports: tuple[int, ...]

    def to_json(self) -> str:
        return json.dumps(
            {"index": self.index, "count": self.count, "families": list(self.families),
             "admin_ports": list(self.admin_ports)}
        )

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> WorkerSettings | None:
        """The settings of this process if the supervisor started it, else None."""
        text = (os.environ if environ is None else environ).get(WORKER_ENVIRONMENT)
        if not text:
            return None
        data = json.loads(text)
        return cls(
            int(data["index"]), int(data["count"]), tuple(int(f) for f in data["families"]),
            tuple(int(p) for p in data["admin_ports"]),
        )

    @property
    def admin_fd(self) -> int:
        return _FIRST_SOCKET_FD + len(self.families)


# -- the parent --------------------------------------------------------------------------------------


class WorkerProcess(ProcessProtocol):
    """One worker process: relays its log to the parent's, says when it is listening and when it ended."""

    def __init__(self, supervisor: WorkerSupervisor, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.pid: int | None = None
        self.ready: Deferred[None] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self.ready_at: float | None = None
        #: a rolling restart's new worker, until it listens (its failure is the rolling restart's)
        self.replacing = False
        self.exit_text = ""
        self._buffers: dict[int, bytes] = {}

    def connectionMade(self) -> None:
        self.pid = cast(Any, self.transport).pid
        self.transport.closeStdin()  # type: ignore[union-attr]

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        buffered = self._buffers.get(childFD, b"") + data
        *lines, self._buffers[childFD] = buffered.split(b"\n")
        for line in lines:
            if childFD == _STATUS_FD:
                if line.strip() == b"ready" and not self.ready.called:
                    self.ready_at = self.supervisor.clock.seconds()
                    self.ready.callback(None)
            else:
                self._relay(line.decode("utf-8", "replace"), childFD)

    def _relay(self, line: str, childFD: int) -> None:
        """One line of the worker's log (JSON events) or of its stderr, into the parent's log."""
        text = line.lstrip("\x1e").strip()
        if not text:
            return
        if childFD == 1 and text.startswith("{"):
            try:
                event = eventFromJSON(text)
            except ValueError:
                event = None
            if event is not None:
                level = getattr(event.get("log_level"), "name", "-")
                system = event.get("log_system") or f"{event.get('log_namespace', '-')}#{level}"
                event["log_system"] = f"worker {self.index} {system}"
                event["hub_worker"] = self.index
                event["hub_worker_pid"] = self.pid
                globalLogPublisher(event)
                return
        log = _log.error if childFD == 2 else _log.info
        log("worker {index} (pid {pid}): {line}", index=self.index, pid=self.pid, line=text)

    def processEnded(self, reason: Failure) -> None:
        code = getattr(reason.value, "exitCode", None)
        number = getattr(reason.value, "signal", None)
        self.exit_text = f"signal {number}" if number is not None else f"exit status {code}"
        if not self.ready.called:
            self.ready.errback(RuntimeError(f"worker {self.index} ended before listening ({self.exit_text})"))
        self.ended.callback(None)
        self.supervisor._ended(self)

    def signal(self, signum: int) -> None:
        if self.pid is not None and not self.ended.called:
            _kill(self.pid, signum)


@dataclass
class _Slot:
    """Worker number C{index}: its sockets (held by the parent) and the process serving them now."""

    index: int
    fds: list[int]
    current: WorkerProcess | None = None
    failures: int = 0
    restarts: int = 0
    timer: IDelayedCall | None = None
    draining: list[WorkerProcess] = field(default_factory=list)


class WorkerSupervisor(MultiService):
    """
    The parent of C{twistd hub --workers N}: binds the sockets, starts N
    workers, restarts a worker that died (L{RestartBackoff}), replaces them
    one at a time on SIGHUP (L{rolling_restart}), and stops them all
    (gracefully, each with its own shutdown) when it stops.

    @param hub_arguments: the worker's C{twistd hub} arguments (the parent's own).
    @param stop_timeout: seconds a worker may take to stop (its shutdown
        timeout and drain delay, and a margin) before it is killed.
    """

    def __init__(
        self,
        count: int,
        listen: Sequence[str],
        hub_arguments: Sequence[str],
        *,
        stop_timeout: float,
        reactor: Any = None,
        backoff: RestartBackoff = RestartBackoff(),
        twistd_arguments: Sequence[str] = (),
        directory: str | None = None,
        handle_sighup: bool = True,
    ) -> None:
        MultiService.__init__(self)
        if count < 1:
            raise ValueError(f"workers must be >= 1, got {count}")
        self.count = count
        self.listen = list(listen)
        self.addresses = [tcp_address(description) for description in self.listen]
        self.hub_arguments = list(hub_arguments)
        self.twistd_arguments = list(twistd_arguments)
        self.stop_timeout = stop_timeout
        self.backoff = backoff
        #: where workers start (C{--hub module:Class} and a relative C{--config} are found from there)
        self.directory = directory if directory is not None else os.getcwd()
        self.handle_sighup = handle_sighup
        self._reactor = reactor
        self.slots: list[_Slot] = []
        self.ports: list[int] = []
        self.admin_ports: list[int] = []
        self._sockets: list[socket.socket] = []
        self._stopping = False
        self._rolling: Deferred[None] | None = None
        self._previous_sighup: Any = None
        #: fires once every worker has said it listens, the first time
        self.all_ready: Deferred[None] = Deferred()

    @property
    def reactor(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    @property
    def clock(self) -> IReactorTime:
        return cast(IReactorTime, self.reactor)

    # -- start

    def privilegedStartService(self) -> None:
        # Bind before twistd drops privileges (a port below 1024); the workers start as the dropped user.
        self._bind()
        MultiService.privilegedStartService(self)

    def _bind(self) -> None:
        if self.slots:
            return
        check_platform()
        groups: list[list[socket.socket]] = []
        try:
            for address in self.addresses:
                group = bind_group(address, self.count)
                groups.append(group)
                self._sockets.extend(group)
                self.ports.append(group[0].getsockname()[1])
            admin_sockets = [self._admin_socket() for _ in range(self.count)]
        except BaseException:
            self._close_sockets()
            raise
        self.admin_ports = [s.getsockname()[1] for s in admin_sockets]
        for index in range(self.count):
            fds = [group[index].fileno() for group in groups] + [admin_sockets[index].fileno()]
            self.slots.append(_Slot(index, fds))

    def _admin_socket(self) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sockets.append(listener)
        listener.bind(("127.0.0.1", 0))
        listener.listen(DEFAULT_BACKLOG)
        return listener

    def _close_sockets(self) -> None:
        for listener in self._sockets:
            listener.close()
        self._sockets = []

    def startService(self) -> None:
        self._bind()
        MultiService.startService(self)
        urls = ", ".join(
            f"{a.interface}:{port}" for a, port in zip(self.addresses, self.ports, strict=True)
        )
        _log.info(
            "supervising {count} hub worker(s) on {urls} (pid {pid}); their own metrics and status on 127.0.0.1 "
            "ports {admin}; SIGHUP restarts them one at a time",
            count=self.count, urls=urls, pid=os.getpid(), admin=", ".join(map(str, self.admin_ports)),
            ports=self.ports, admin_ports=self.admin_ports,
        )
        for slot in self.slots:
            self._start(slot)
        self._install_sighup()

    def _listening(self, process: WorkerProcess) -> None:
        _log.info("worker {index} is listening (pid {pid})", index=process.index, pid=process.pid)
        every = all(slot.current is not None and slot.current.ready.called for slot in self.slots)
        if every and not self.all_ready.called:
            _log.info("all {count} hub workers are listening", count=self.count)
            self.all_ready.callback(None)

    def _start(self, slot: _Slot) -> WorkerProcess:
        settings = WorkerSettings(
            slot.index, self.count, tuple(a.family for a in self.addresses), tuple(self.admin_ports)
        )
        environment = dict(os.environ)
        environment[WORKER_ENVIRONMENT] = settings.to_json()
        environment["PYTHONUNBUFFERED"] = "1"
        child_fds: dict[int, int | str] = {0: "w", 1: "r", 2: "r", _CONTROL_FD: "w", _STATUS_FD: "r"}
        for offset, fd in enumerate(slot.fds):
            child_fds[_FIRST_SOCKET_FD + offset] = fd
        argv = [
            sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "--nodaemon", "--pidfile=", "--logger", "twisted_hub.tap.json_log_observer",
            *self.twistd_arguments, "hub", *self.hub_arguments,
        ]
        process = WorkerProcess(self, slot.index)
        cast(IReactorProcess, self.reactor).spawnProcess(
            process, sys.executable, argv, env=environment, path=self.directory, childFDs=child_fds
        )
        slot.current = process
        process.ready.addCallbacks(lambda _: self._listening(process), lambda _: None)
        return process

    # -- deaths and restarts

    def _ended(self, process: WorkerProcess) -> None:
        slot = self.slots[process.index]
        if process in slot.draining:
            slot.draining.remove(process)
            _log.info(
                "worker {index} (pid {pid}) stopped ({how})", index=process.index, pid=process.pid, how=process.exit_text
            )
            return
        if process.replacing:
            _log.error(
                "worker {index}: the new worker (pid {pid}) ended before listening ({how})",
                index=process.index, pid=process.pid, how=process.exit_text,
            )
            return
        if slot.current is not process:
            _log.warn(
                "worker {index} (pid {pid}) ended ({how})", index=process.index, pid=process.pid, how=process.exit_text
            )
            return
        slot.current = None
        if self._stopping:
            _log.info(
                "worker {index} (pid {pid}) stopped ({how})", index=process.index, pid=process.pid, how=process.exit_text
            )
            return
        served = 0.0 if process.ready_at is None else self.clock.seconds() - process.ready_at
        slot.failures = self.backoff.failures_after(slot.failures, served)
        delay = self.backoff.delay(slot.failures)
        _log.warn(
            "worker {index} (pid {pid}) ended ({how}) after {served:.1f} s of serving: "
            "restarting it in {delay:g} s ({failures} death(s) in a row)",
            index=process.index, pid=process.pid, how=process.exit_text, served=served, delay=delay,
            failures=slot.failures,
        )
        slot.timer = self.clock.callLater(delay, self._restart, slot)

    def _restart(self, slot: _Slot) -> None:
        slot.timer = None
        if self._stopping or slot.current is not None:
            return
        slot.restarts += 1
        self._start(slot)

    # -- rolling restart

    def _install_sighup(self) -> None:
        if not self.handle_sighup or not hasattr(signal, "SIGHUP"):
            return
        reactor = self.reactor

        def on_sighup(signum: int, frame: object) -> None:
            # a signal handler runs between any two bytecodes: act from the reactor
            reactor.callFromThread(self._sighup)

        self._previous_sighup = signal.signal(signal.SIGHUP, on_sighup)

    def _sighup(self) -> None:
        if self._rolling is not None:
            _log.info("SIGHUP: a rolling restart is under way already")
            return
        self.rolling_restart()

    def rolling_restart(self) -> Deferred[None]:
        """
        Replace every worker, one at a time: start the new one on the slot's
        sockets, wait until it listens, then stop the old one gracefully
        (it drains its connections; the other workers keep theirs) and wait
        for it to end before the next slot.  A new worker that does not
        start stops the rolling restart (the old one keeps serving).
        """
        if self._rolling is not None:
            return self._rolling
        _log.info("rolling restart of {count} worker(s)", count=self.count)
        started = self.clock.seconds()

        async def roll() -> None:
            for slot in self.slots:
                if self._stopping:
                    return
                await self._replace(slot)
            _log.info(
                "rolling restart done in {seconds:.1f} s", seconds=self.clock.seconds() - started
            )

        def over(result: object) -> object:
            self._rolling = None
            if isinstance(result, Failure):
                _log.error("rolling restart stopped: {why}", why=result.getErrorMessage())
                return None
            return result

        self._rolling = Deferred.fromCoroutine(roll()).addBoth(over)
        return self._rolling

    async def _replace(self, slot: _Slot) -> None:
        old = slot.current
        if slot.timer is not None and slot.timer.active():
            slot.timer.cancel()
            slot.timer = None
        new = self._start(slot)
        new.replacing = True
        try:
            await new.ready.addTimeout(READY_TIMEOUT, self.clock)
        except BaseException:
            new.signal(signal.SIGKILL)
            slot.current = old if old is not None and not old.ended.called else None
            if slot.current is None and not self._stopping:
                slot.timer = self.clock.callLater(self.backoff.delay(1), self._restart, slot)
            raise
        finally:
            new.replacing = False
        slot.failures = 0
        slot.restarts += 1
        if old is not None and not old.ended.called:
            slot.draining.append(old)
            _log.info(
                "worker {index}: pid {new} listens; pid {old} drains its connections",
                index=slot.index, new=new.pid, old=old.pid,
            )
            await self._stop_process(old, replaced=True)

    def _stop_process(self, process: WorkerProcess, replaced: bool = False) -> Deferred[None]:
        """
        Its graceful shutdown, SIGKILL after C{stop_timeout}; fires when it
        ended.  A worker that was C{replaced} (a rolling restart) is told so
        on its control pipe and stops without C{--drain-delay}: a new worker
        serves its sockets already, and a C{/health} answering 503 there
        would only make a load balancer take the whole machine out.  Else SIGTERM.
        """
        if process.ended.called:
            return succeed(None)
        if replaced and process.transport is not None:
            cast(Any, process.transport).writeToChild(_CONTROL_FD, REPLACED)
        else:
            process.signal(signal.SIGTERM)
        killer = self.clock.callLater(self.stop_timeout, process.signal, signal.SIGKILL)

        def ended(result: object) -> object:
            if killer.active():
                killer.cancel()
            return result

        ending: Deferred[None] = Deferred()
        process.ended.addBoth(ended).addBoth(lambda _: ending.callback(None))
        return ending

    # -- stop

    def stopService(self) -> Deferred[None]:
        self._stopping = True
        if self._previous_sighup is not None:
            signal.signal(signal.SIGHUP, self._previous_sighup)
            self._previous_sighup = None
        processes: list[WorkerProcess] = []
        for slot in self.slots:
            if slot.timer is not None and slot.timer.active():
                slot.timer.cancel()
            processes.extend(p for p in [slot.current, *slot.draining] if p is not None)
        _log.info("stopping {count} worker process(es)", count=len(processes))
        stopping = gatherResults([self._stop_process(p) for p in processes])

        def done(_: object) -> Deferred[None]:
            self._close_sockets()
            stopped = MultiService.stopService(self)
            return stopped if isinstance(stopped, Deferred) else succeed(None)

        return stopping.addCallback(done)


# -- the worker --------------------------------------------------------------------------------------


class _ParentWatch(Protocol):
    """
    The worker's end of the control pipe: L{REPLACED} on it asks the worker to
    stop (a rolling restart); when it closes, the parent is gone (even by SIGKILL).
    """

    def __init__(self, on_lost: Callable[[], None], on_replaced: Callable[[], None]) -> None:
        self.on_lost = on_lost
        self.on_replaced = on_replaced
        self._buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        if REPLACED in self._buffer:
            self._buffer = b""
            self.on_replaced()
        self._buffer = self._buffer[-len(REPLACED):]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.on_lost()


class _QuietSite(Site):
    """The private port's site: no access log line per scrape."""

    def log(self, request: HTTPRequest) -> None:
        pass


class WorkerRole(Service):
    """
    What makes a C{twistd hub} process a worker: listen on the sockets the
    parent passed (instead of binding C{--listen} itself), serve its own
    metrics and status on its private port, gather every worker's metrics
    on the public C{/metrics}, tell the parent once it listens, and stop
    when the parent is gone.
    """

    def __init__(self, settings: WorkerSettings, hubs: Any, reactor: Any = None) -> None:
        self.settings = settings
        self.hubs = hubs
        self._reactor = reactor
        self._admin_port: IListeningPort | None = None
        self._pipes: Any = None
        reactor = self.reactor
        hubs.endpoints = [
            AdoptedStreamServerEndpoint(reactor, _FIRST_SOCKET_FD + offset, family)
            for offset, family in enumerate(settings.families)
        ]
        factory = hubs.factory
        if factory.metrics is not None and hubs.root is not None:
            from .._twisted.resource import mount

            mount(hubs.root, hubs.path, "/metrics", CombinedMetricsPage(factory, settings, reactor))
        for page in _status_pages(hubs.root):
            # the public status page is the one of whichever worker answered: say which
            page.extra.append((
                "worker", f"{settings.index} of {settings.count} (pid {os.getpid()}); this page shows this worker only; its data "
                f"at 127.0.0.1:{settings.admin_ports[settings.index]}/status.json (docs/scaling.md)",
            ))

    @property
    def reactor(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    def _admin_site(self) -> Site:
        from .endpoints import HealthPage, MetricsPage, StatusJsonPage

        factory = self.hubs.factory
        root = Resource()
        root.putChild(b"health", HealthPage(factory))
        root.putChild(b"status.json", StatusJsonPage(factory))
        if factory.metrics is not None:
            root.putChild(b"metrics", MetricsPage(factory))
        site = cast(Callable[[Resource], Site], _QuietSite)(root)
        site.noisy = False
        return site

    def startService(self) -> None:
        Service.startService(self)
        from twisted.internet import stdio

        os.environ.pop(WORKER_ENVIRONMENT, None)  # not for processes the hubs may start
        self._pipes = cast(Any, stdio).StandardIO(
            _ParentWatch(self._parent_gone, self._replaced), stdin=_CONTROL_FD, stdout=_STATUS_FD, reactor=self.reactor
        )
        admin = AdoptedStreamServerEndpoint(self.reactor, self.settings.admin_fd, socket.AF_INET)
        listening = [admin.listen(self._admin_site()).addCallback(self._admin_listening)]
        listening.append(self.hubs.listening_ports())
        gatherResults(listening).addCallbacks(self._listening, self._failed)

    def _admin_listening(self, port: IListeningPort) -> None:
        self._admin_port = port

    def _listening(self, _: object) -> None:
        _log.info(
            "worker {index} of {count} (pid {pid}): listening; own metrics and status at http://127.0.0.1:{port}/",
            index=self.settings.index, count=self.settings.count, pid=os.getpid(),
            port=self.settings.admin_ports[self.settings.index],
        )
        self._pipes.write(b"ready\n")

    def _failed(self, failure: Failure) -> None:
        _log.failure("worker {index} cannot listen", failure, index=self.settings.index)
        self.reactor.stop()

    def _replaced(self) -> None:
        if self.running:
            _log.info(
                "worker {index} (pid {pid}): a new worker serves its sockets; stopping (no drain delay)",
                index=self.settings.index, pid=os.getpid(),
            )
            self.hubs.drain_delay = 0.0
            self.reactor.stop()

    def _parent_gone(self) -> None:
        if self.running:
            _log.warn("worker {index}: the supervisor is gone; stopping", index=self.settings.index)
            self.reactor.stop()

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        port, self._admin_port = self._admin_port, None
        if port is None:
            return succeed(None)
        return cast(Deferred[None], port.stopListening())


def _status_pages(root: Resource | None) -> list[Any]:
    """The status pages (L{HubStatusPage}) of a site's resource tree."""
    from .._twisted.resource import HubStatusPage

    found: list[Any] = []
    pending = [root] if root is not None else []
    while pending:
        resource = pending.pop()
        if isinstance(resource, HubStatusPage):
            found.append(resource)
        pending.extend(child for child in resource.children.values() if isinstance(child, Resource))
    return found


def attach_worker(settings: WorkerSettings, hubs: Any, parent: IServiceCollection) -> WorkerRole:
    """Make the C{twistd hub} process of C{hubs} the worker C{settings} describes."""
    role = WorkerRole(settings, hubs)
    role.setServiceParent(parent)  # type: ignore[no-untyped-call]
    return role


class CombinedMetricsPage(Resource):
    """
    C{GET /metrics} of a worker: every worker's metrics, each sample
    labelled C{worker="N"} (its own at once, the others' from their private
    ports, at most L{METRICS_TIMEOUT} s), and C{twisted_hub_worker_up}: 1 for
    each worker that answered, 0 for one that did not (restarting, stalled).
    """

    isLeaf = True

    def __init__(self, factory: Any, settings: WorkerSettings, reactor: Any) -> None:
        Resource.__init__(self)
        self.registry = factory.metrics.registry
        self.settings = settings
        self.reactor = reactor
        from twisted.web.client import HTTPConnectionPool

        # one kept-alive connection per other worker, not one (and two log lines) per scrape
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 1

    def _fetch(self, index: int) -> Deferred[str | None]:
        if index == self.settings.index:
            from prometheus_client import generate_latest

            return succeed(generate_latest(self.registry).decode())
        from twisted.web.client import Agent, readBody

        agent = Agent(self.reactor, connectTimeout=METRICS_TIMEOUT, pool=self.pool)
        url = f"http://127.0.0.1:{self.settings.admin_ports[index]}/metrics".encode()
        asking = agent.request(b"GET", url)
        asking.addCallback(readBody).addTimeout(METRICS_TIMEOUT, self.reactor)
        return asking.addCallbacks(lambda body: body.decode(), lambda _: None)

    def render_GET(self, request: Request) -> int:
        asked = [self._fetch(index) for index in range(self.settings.count)]

        def render(texts: list[str | None]) -> None:
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
            request.write(generate_latest(_Families(combine_metrics(texts))))
            request.finish()

        def failed(failure: Failure) -> None:
            _log.failure("combining the workers' metrics failed", failure)
            request.setResponseCode(500)
            request.finish()

        gatherResults(asked).addCallbacks(render, failed)
        return NOT_DONE_YET


@dataclass
class _Families:
    families: list[Any]

    def collect(self) -> list[Any]:
        return self.families


def combine_metrics(texts: Sequence[str | None]) -> list[Any]:
    """
    The metric families of every worker's exposition text (C{texts[i]} of
    worker C{i}, None if it did not answer), each sample labelled with its
    worker, one family per name, and C{twisted_hub_worker_up}.
    """
    from prometheus_client.core import GaugeMetricFamily, Metric
    from prometheus_client.parser import text_string_to_metric_families

    combined: dict[str, Metric] = {}
    up = GaugeMetricFamily(
        "twisted_hub_worker_up", "1 if the worker answered this scrape, else 0", labels=["worker"]
    )
    for index, text in enumerate(texts):
        up.add_metric([str(index)], 0.0 if text is None else 1.0)
        if text is None:
            continue
        for family in text_string_to_metric_families(text):
            merged = combined.get(family.name)
            if merged is None:
                merged = combined[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
            for sample in family.samples:
                merged.samples.append(
                    type(sample)(sample.name, {**sample.labels, "worker": str(index)}, sample.value,
                                 sample.timestamp, sample.exemplar)
                )
    return [up, *combined.values()]


def stop_timeout(shutdown_timeout: float, drain_delay: float) -> float:
    """Seconds the supervisor lets a worker take to stop: its drain and shutdown, and 5 s for the rest."""
    return drain_delay + shutdown_timeout + 5.0
