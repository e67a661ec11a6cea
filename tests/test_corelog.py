"""The sans-IO core's log: the same lines on twisted.logger and on the standard logging module."""

from __future__ import annotations

import logging

import pytest
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from twisted_hub._core.log import CoreLog, StdlibCoreLog
from twisted_hub._support.logging import TwistedCoreLog, set_log_level


def write_lines(log: CoreLog) -> None:
    log.info("{id} sent no hello within {timeout}s", id="c1", timeout=5)
    log.debug("rtt {rtt:.3f}", rtt=0.12345)
    log.warn("bad {name!r}", name="x")
    try:
        raise ValueError("boom")
    except ValueError:
        log.failure("receiver {method} raised", method="m")
    log.failure("provider failed", KeyError("k"))


def test_twisted_core_log_emits_twisted_events() -> None:
    events: list[dict[str, object]] = []
    globalLogPublisher.addObserver(events.append)
    set_log_level("debug")
    try:
        write_lines(TwistedCoreLog("twisted_hub.test"))
    finally:
        set_log_level("info")
        globalLogPublisher.removeObserver(events.append)
    mine = [e for e in events if e.get("log_namespace") == "twisted_hub.test"]
    assert [formatEvent(e) for e in mine] == [
        "c1 sent no hello within 5s", "rtt 0.123", "bad 'x'", "receiver m raised", "provider failed",
    ]
    assert [e["log_level"] for e in mine] == [LogLevel.info, LogLevel.debug, LogLevel.warn, LogLevel.critical, LogLevel.critical]
    assert mine[3]["log_failure"].check(ValueError)  # type: ignore[attr-defined]
    assert mine[4]["log_failure"].check(KeyError)  # type: ignore[attr-defined]


def test_twisted_core_log_respects_the_hub_level() -> None:
    events: list[dict[str, object]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        TwistedCoreLog("twisted_hub.test").debug("hidden at the default level")
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert [e for e in events if e.get("log_namespace") == "twisted_hub.test"] == []


def test_stdlib_core_log_formats_lazily_with_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="twisted_hub.test"):
        write_lines(StdlibCoreLog("twisted_hub.test"))
    records = [r for r in caplog.records if r.name == "twisted_hub.test"]
    assert [r.getMessage() for r in records] == [
        "c1 sent no hello within 5s", "rtt 0.123", "bad 'x'", "receiver m raised", "provider failed",
    ]
    assert [r.levelno for r in records] == [logging.INFO, logging.DEBUG, logging.WARNING, logging.ERROR, logging.ERROR]
    assert records[3].exc_info is not None and records[3].exc_info[0] is ValueError
    assert records[4].exc_info is not None and records[4].exc_info[0] is KeyError
    assert records[0].funcName == "write_lines"  # the caller, not the log wrapper


def test_stdlib_core_log_skips_formatting_below_its_level(caplog: pytest.LogCaptureFixture) -> None:
    class Exploding:
        def __format__(self, spec: str) -> str:
            raise AssertionError("formatted although the level is off")

    with caplog.at_level(logging.INFO, logger="twisted_hub.test"):
        StdlibCoreLog("twisted_hub.test").debug("{x}", x=Exploding())
    assert [r for r in caplog.records if r.name == "twisted_hub.test"] == []


def test_the_authenticators_lines_follow_the_hub_level() -> None:
    """An authenticator's timeout is logged at warn through twisted-hub's level: set to error, it is not written."""
    from twisted.internet.defer import TimeoutError
    from twisted.python.failure import Failure

    from twisted_hub._hubs.auth import refusal_of

    events: list[dict[str, object]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        assert refusal_of(Failure(TimeoutError()), "c1").status == 503
        set_log_level("error")
        assert refusal_of(Failure(TimeoutError()), "c2").status == 503
    finally:
        set_log_level("info")
        globalLogPublisher.removeObserver(events.append)
    mine = [formatEvent(e) for e in events if e.get("log_namespace") == "twisted_hub._hubs.auth"]
    assert mine == ["c1: the authenticator did not answer in time"]


def test_every_twisted_logger_of_the_package_goes_through_the_level_filter() -> None:
    """Each twisted.logger Logger in twisted_hub/ gets an observer (HUB_LOG_OBSERVER or a forwarder), but CallLog's."""
    import ast
    from pathlib import Path

    import twisted_hub

    # CallLog's default logger: the call log's level is its own (CallLog(level=...), --log-calls).
    own_level = {"filters.py"}
    unfiltered = []
    for path in Path(twisted_hub.__file__).parent.rglob("*.py"):
        if path.name in own_level:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Logger":
                if not any(keyword.arg == "observer" for keyword in node.keywords):
                    unfiltered.append(f"{path.name}:{node.lineno}")
    assert unfiltered == []
