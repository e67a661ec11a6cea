"""C{twistd hub --workers N}: its options, the pieces of its supervisor that are pure (units, no processes)."""

from __future__ import annotations

import signal
import socket
from dataclasses import dataclass, field
from typing import Any

import pytest
from twisted.internet.error import CannotListenError, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python import usage
from twisted.python.failure import Failure

from twisted_hub._workers import (
    RestartBackoff,
    WorkerSettings,
    WorkersUnavailable,
    WorkerSupervisor,
    bind_group,
    check_platform,
    combine_metrics,
    tcp_address,
)
from twisted_hub.tap import HintedUsageError, Options

REDIS = "redis://127.0.0.1:6379/0"


def parse(*arguments: str) -> Options:
    options = Options()
    options.parseOptions(list(arguments))
    return options


def test_workers_option_parsed_and_arguments_kept() -> None:
    """--workers N is a whole number; the hub arguments are kept as given, for the workers."""
    options = parse("--workers", "3", "--port", "0", "--redis", REDIS)
    assert options["workers"] == 3
    assert options.arguments == ["--workers", "3", "--port", "0", "--redis", REDIS]
    assert parse()["workers"] is None


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_workers_must_be_a_whole_number(value: str) -> None:
    """--workers 0, negative, or not a whole number: a usage error naming it."""
    with pytest.raises(usage.UsageError, match="--workers must be a whole number >= 1"):
        parse("--workers", value)


def test_more_than_one_worker_needs_redis() -> None:
    """--workers 2 without --redis is an error that says why (groups and broadcasts would split) and what to do."""
    with pytest.raises(HintedUsageError, match="--workers: 2 workers need --redis URL") as raised:
        parse("--workers", "2")
    assert "--redis redis://" in raised.value.hint
    assert parse("--workers", "1")["workers"] == 1  # one worker is one node: no backplane needed


def test_workers_from_the_config_file(tmp_path: object) -> None:
    """workers = N in the TOML file, checked the same way."""
    from pathlib import Path

    config = Path(str(tmp_path)) / "hub.toml"
    config.write_text(f'workers = 2\nredis = "{REDIS}"\n')
    assert parse("--config", str(config))["workers"] == 2
    config.write_text("workers = 2\n")
    with pytest.raises(usage.UsageError, match="hub.toml: workers: 2 workers need --redis URL"):
        parse("--config", str(config))


@pytest.mark.parametrize(
    "listen", ["ssl:8443:privateKey=k.pem:certKey=c.pem", "unix:/tmp/hub.sock"],
)
def test_workers_serve_tcp_only(listen: str, tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """A listener that is not tcp: is refused with --workers, with what to do instead."""
    import twisted_hub.tap as tap

    monkeypatch.setattr(tap, "check_listen", lambda description: description)
    with pytest.raises(usage.UsageError, match="--workers serves tcp: listeners only"):
        parse("--workers", "2", "--redis", REDIS, "--listen", listen)


def test_platform_without_balancing_is_a_clear_error() -> None:
    """On a platform whose SO_REUSEPORT does not spread connections (macOS, Windows) --workers says so."""
    for platform in ("darwin", "win32", "freebsd14"):
        with pytest.raises(WorkersUnavailable, match=f"--workers needs Linux.*this is {platform}"):
            check_platform(platform)
    check_platform("linux")


def test_platform_error_stops_option_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    """twistd hub --workers on such a platform stops before anything listens, naming the platform."""
    import sys

    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(usage.UsageError, match="this is darwin"):
        parse("--workers", "2", "--redis", REDIS)


def test_tcp_addresses() -> None:
    """The address each tcp:/tcp6: description binds, as Twisted's strports read it."""
    assert tcp_address("tcp:8080:interface=127.0.0.1") == tcp_address("tcp:port=8080:interface=127.0.0.1")
    address = tcp_address("tcp:8080:interface=127.0.0.1:backlog=100")
    assert (address.family, address.interface, address.port, address.backlog) == (
        socket.AF_INET, "127.0.0.1", 8080, 100
    )
    assert tcp_address("tcp:9000").interface == "0.0.0.0"
    six = tcp_address("tcp:9000:interface=\\:\\:1")
    assert (six.family, six.interface) == (socket.AF_INET6, "::1")
    assert tcp_address("tcp6:9000").family == socket.AF_INET6


def test_bind_group_shares_a_chosen_port() -> None:
    """Port 0: the first socket's port is bound by the others (SO_REUSEPORT); all listen."""
    sockets = bind_group(tcp_address("tcp:0:interface=127.0.0.1"), 3)
    try:
        ports = {s.getsockname()[1] for s in sockets}
        assert len(ports) == 1 and ports != {0}
        for s in sockets:
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
    finally:
        for s in sockets:
            s.close()


def test_bind_group_port_taken_is_cannot_listen() -> None:
    """A port another socket holds (without SO_REUSEPORT) fails with CannotListenError, nothing left open."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        with pytest.raises(CannotListenError) as raised:
            bind_group(tcp_address(f"tcp:{port}:interface=127.0.0.1"), 2)
        assert raised.value.port == port


def test_restart_backoff_doubles_to_its_bound_and_resets_after_health() -> None:
    """Deaths in a row wait 0.5, 1, 2 ... s up to 30 s; a worker that served 30 s starts afresh."""
    backoff = RestartBackoff()
    failures = 0
    delays = []
    for _ in range(9):
        failures = backoff.failures_after(failures, served=1.0)
        delays.append(backoff.delay(failures))
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert backoff.failures_after(failures, served=30.0) == 1
    assert backoff.delay(10_000) == 30.0


def test_worker_settings_round_trip() -> None:
    """What the supervisor puts in TWISTED_HUB_WORKER is what the worker reads; absent means not a worker."""
    settings = WorkerSettings(1, 2, (socket.AF_INET, socket.AF_INET6), (4001, 4002))
    assert WorkerSettings.from_environment({"TWISTED_HUB_WORKER": settings.to_json()}) == settings
    assert settings.admin_fd == 7  # after the control and status pipes (3, 4) and two listen sockets
    assert WorkerSettings.from_environment({}) is None


def test_combine_metrics_labels_every_sample_with_its_worker() -> None:
    """Each worker's samples get worker="N", one family per name; a worker that did not answer is up 0."""
    from prometheus_client import CollectorRegistry, Counter, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    texts: list[str | None] = []
    for value in (3, 5):
        registry = CollectorRegistry()
        Counter("twisted_hub_connects_total", "connections opened", ["hub"], registry=registry).labels("chat").inc(value)
        texts.append(generate_latest(registry).decode())
    texts.append(None)

    class Families:
        def collect(self) -> list[object]:
            return combine_metrics(texts)

    text = generate_latest(Families()).decode()  # type: ignore[arg-type]
    assert text.count("# TYPE twisted_hub_connects_total counter") == 1
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }
    assert samples[("twisted_hub_connects_total", (("hub", "chat"), ("worker", "0")))] == 3
    assert samples[("twisted_hub_connects_total", (("hub", "chat"), ("worker", "1")))] == 5
    assert not any(labels and dict(labels).get("worker") == "2" and name.startswith("twisted_hub_connects")
                   for name, labels in samples)
    assert [samples[("twisted_hub_worker_up", (("worker", str(i)),))] for i in range(3)] == [1, 1, 0]


class ProcessClock(Clock):
    """A Clock that records spawnProcess calls instead of starting processes (pids are made up, never signalled)."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[Any, list[str], dict[int, Any]]] = []

    def spawnProcess(self, protocol: Any, executable: str, args: list[str], env: Any = None, path: Any = None,
                     childFDs: Any = None, **rest: Any) -> Any:
        transport = FakeProcessTransport(100_000 + len(self.spawned))
        self.spawned.append((protocol, list(args), dict(childFDs)))
        protocol.makeConnection(transport)
        return transport


@dataclass
class FakeProcessTransport:
    pid: int
    stdin_closed: bool = False
    written: list[tuple[int, bytes]] = field(default_factory=list)

    def closeStdin(self) -> None:
        self.stdin_closed = True

    def writeToChild(self, fd: int, data: bytes) -> None:
        self.written.append((fd, data))


def end(process: Any, signum: int | None = 9, code: int | None = None) -> None:
    """The process ended (as Twisted reports it)."""
    process.processEnded(Failure(ProcessTerminated(exitCode=code, signal=signum)))


@pytest.fixture
def supervised(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A WorkerSupervisor of 2 workers on a ProcessClock, its signals recorded, not sent."""
    from twisted_hub import _workers

    signals: list[tuple[int, int]] = []
    monkeypatch.setattr(_workers, "_kill", lambda pid, signum: signals.append((pid, signum)))
    clock = ProcessClock()
    supervisor = WorkerSupervisor(
        2, ["tcp:0:interface=127.0.0.1"], ["--workers", "2"], stop_timeout=7.0, reactor=clock, handle_sighup=False
    )
    supervisor.startService()
    yield supervisor, clock, signals
    if supervisor.running:
        for slot in supervisor.slots:
            for process in [slot.current, *slot.draining]:
                if process is not None and not process.ended.called:
                    end(process)
        supervisor.stopService()
    supervisor._close_sockets()


def test_workers_started_on_their_own_sockets(supervised: Any) -> None:
    """Each worker is twistd hub with the same arguments, its pipes, its own listen socket and private port."""
    supervisor, clock, _ = supervised
    assert len(clock.spawned) == 2
    fds = []
    for index, (process, args, child_fds) in enumerate(clock.spawned):
        assert process.index == index
        assert args[-3:] == ["hub", "--workers", "2"]
        assert child_fds[3] == "w" and child_fds[4] == "r"  # control and status pipes
        fds.append((child_fds[5], child_fds[6]))  # the listen socket, the private port
        assert process.transport.stdin_closed
    assert fds[0] != fds[1]
    assert len(set(supervisor.ports)) == 1 and len(set(supervisor.admin_ports)) == 2


def test_dead_worker_restarted_with_backoff_on_the_same_sockets(supervised: Any) -> None:
    """A worker that dies is restarted after 0.5 s, then 1 s if it dies again before serving, on its sockets."""
    supervisor, clock, _ = supervised
    for process, _, _ in clock.spawned:
        process.childDataReceived(4, b"ready\n")
    first, _, first_fds = clock.spawned[0]
    clock.advance(40)  # it served 40 s: healthy
    end(first)
    clock.advance(0.49)
    assert len(clock.spawned) == 2
    clock.advance(0.01)
    assert len(clock.spawned) == 3
    second, _, second_fds = clock.spawned[2]
    assert second.index == 0 and second_fds == first_fds
    end(second, signum=None, code=1)  # died before it listened
    clock.advance(0.99)
    assert len(clock.spawned) == 3
    clock.advance(0.01)
    assert len(clock.spawned) == 4
    assert supervisor.slots[0].restarts == 2


def test_all_listening_once_every_slot_listens(supervised: Any) -> None:
    """A worker that dies before it listens delays "all listening" until its replacement listens."""
    supervisor, clock, _ = supervised
    first, second = (process for process, _, _ in clock.spawned)
    end(first, signum=None, code=1)
    second.childDataReceived(4, b"ready\n")
    assert not supervisor.all_ready.called
    clock.advance(0.5)
    clock.spawned[2][0].childDataReceived(4, b"ready\n")
    assert supervisor.all_ready.called


def test_rolling_restart_replaces_one_worker_at_a_time(supervised: Any) -> None:
    """The new worker starts first; the old one is told to stop once the new one listens; the next slot waits for it to end."""
    supervisor, clock, signals = supervised
    old = [process for process, _, _ in clock.spawned]
    for process in old:
        process.childDataReceived(4, b"ready\n")
    rolling = supervisor.rolling_restart()
    assert len(clock.spawned) == 3 and clock.spawned[2][0].index == 0
    assert old[0].transport.written == []  # the old worker serves until the new one listens
    clock.spawned[2][0].childDataReceived(4, b"rea")
    clock.spawned[2][0].childDataReceived(4, b"dy\n")
    assert old[0].transport.written == [(3, b"replaced\n")]  # on its control pipe: stop, no drain delay
    assert len(clock.spawned) == 3  # worker 1 is not touched while worker 0 drains
    end(old[0], signum=signal.SIGTERM)
    assert len(clock.spawned) == 4 and clock.spawned[3][0].index == 1
    clock.spawned[3][0].childDataReceived(4, b"ready\n")
    assert old[1].transport.written == [(3, b"replaced\n")]
    assert signals == []
    assert not rolling.called
    end(old[1], signum=signal.SIGTERM)
    assert rolling.called
    assert [slot.current for slot in supervisor.slots] == [clock.spawned[2][0], clock.spawned[3][0]]
    clock.advance(60)
    assert len(clock.spawned) == 4  # the drained workers' ends were no deaths: nothing restarted


def test_old_worker_killed_if_it_does_not_stop(supervised: Any) -> None:
    """A draining worker still there after stop_timeout gets SIGKILL."""
    supervisor, clock, signals = supervised
    for process, _, _ in clock.spawned:
        process.childDataReceived(4, b"ready\n")
    supervisor.rolling_restart()
    clock.spawned[2][0].childDataReceived(4, b"ready\n")
    old = clock.spawned[0][0]
    clock.advance(6.9)
    assert signals == []
    clock.advance(0.1)
    assert signals == [(old.pid, signal.SIGKILL)]


def test_stop_service_stops_every_worker_and_no_restart(supervised: Any) -> None:
    """stopService: SIGTERM to each worker, a pending restart cancelled, fires once every worker ended."""
    supervisor, clock, signals = supervised
    first, second = (process for process, _, _ in clock.spawned)
    end(first)  # a restart is pending
    stopped = supervisor.stopService()
    assert signals == [(second.pid, signal.SIGTERM)]
    assert not stopped.called
    end(second, signum=signal.SIGTERM)
    assert stopped.called
    clock.advance(60)
    assert len(clock.spawned) == 2


def test_worker_log_events_join_the_supervisors_log(supervised: Any) -> None:
    """A worker's JSON log events are re-emitted with their level, text and the worker's number; stderr lines as errors."""
    from twisted.logger import Logger, LogLevel, eventAsJSON, formatEvent, globalLogPublisher

    _, clock, _ = supervised
    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        captured: list[dict[str, Any]] = []
        Logger(namespace="twisted_hub.redis", observer=captured.append).warn("lost Redis at {url}", url="redis://x")
        line = ("\x1e" + eventAsJSON(captured[0]) + "\n").encode()
        process = clock.spawned[1][0]
        process.childDataReceived(1, line[:20])
        assert seen == []  # half a line is not an event yet
        process.childDataReceived(1, line[20:] + b"Traceback? no: a plain line\n")
        process.childDataReceived(2, b"Traceback (most recent call last):\n")
    finally:
        globalLogPublisher.removeObserver(seen.append)
    relayed = [e for e in seen if e.get("hub_worker") == 1]
    assert len(relayed) == 1
    assert relayed[0]["log_level"] == LogLevel.warn
    assert formatEvent(relayed[0]) == "lost Redis at redis://x"
    assert relayed[0]["log_system"] == "worker 1 twisted_hub.redis#warn"
    assert relayed[0]["hub_worker_pid"] == process.pid
    plain = [e for e in seen if e.get("log_namespace") == "twisted_hub.workers"]
    assert [(e["log_level"], e["line"]) for e in plain] == [
        (LogLevel.info, "Traceback? no: a plain line"), (LogLevel.error, "Traceback (most recent call last):"),
    ]


def test_parent_watch_reads_replaced_across_chunks_and_notices_the_end() -> None:
    """The control pipe: "replaced" split over reads stops the worker once; the pipe closing means the parent is gone."""
    from twisted_hub._workers import _ParentWatch

    events: list[str] = []
    watch = _ParentWatch(lambda: events.append("gone"), lambda: events.append("replaced"))
    watch.dataReceived(b"repl")
    assert events == []
    watch.dataReceived(b"aced\n")
    assert events == ["replaced"]
    watch.connectionLost()
    assert events == ["replaced", "gone"]


def test_make_service_builds_the_supervisor_with_twistds_reactor() -> None:
    """twistd hub --workers N: the service is the supervisor (no HubService here), its workers get twistd's --reactor."""
    from twisted_hub._service import HubService
    from twisted_hub.tap import makeService

    options = parse("--workers", "2", "--port", "0", "--redis", REDIS)
    options.parent = {"reactor": "asyncio", "nodaemon": True}  # type: ignore[assignment]
    root = makeService(options)
    children = list(root)  # type: ignore[call-overload]
    assert len(children) == 1 and isinstance(children[0], WorkerSupervisor)
    assert not any(isinstance(child, HubService) for child in children)
    supervisor = children[0]
    assert (supervisor.count, supervisor.twistd_arguments) == (2, ["--reactor", "asyncio"])
    assert supervisor.hub_arguments == ["--workers", "2", "--port", "0", "--redis", REDIS]
