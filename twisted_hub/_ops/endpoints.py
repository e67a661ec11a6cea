"""
What operators read: C{/metrics} (Prometheus), C{/health} (load balancers)
and C{/status.json} (the status page's data).  See C{docs/operations.md}.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource
from twisted.web.server import Request

from .._core.base_error import HubArgumentError
from .._metrics.prometheus import CLAIM_OUTCOMES, backplane_connected, session_moves
from .._twisted.server import HubServerFactory

#: The version of C{/status.json}'s layout; it only grows keys within one version.
STATUS_SCHEMA = 1
#: The window of the status page's rates, success rate and percentiles.
STATUS_WINDOW = 60.0


class MetricsPage(Resource):
    """C{GET /metrics}: the factory's Prometheus registry in the text exposition format."""

    isLeaf = True

    def __init__(self, factory: HubServerFactory) -> None:
        Resource.__init__(self)
        if factory.metrics is None:
            raise HubArgumentError("the factory keeps no metrics (metrics=True)")
        self.registry = factory.metrics.registry

    def render_GET(self, request: Request) -> bytes:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        return generate_latest(self.registry)


class HealthPage(Resource):
    """
    C{GET /health}: 200 C{ok} while serving, 503 C{draining} once the
    graceful shutdown started (so a load balancer sends new clients elsewhere).

    A lost backplane (Redis) keeps it 200, with a second line saying so:
    this node still serves its own clients, and every node shares the one
    Redis, so a 503 would take them all out of rotation at once and turn
    a degraded service (no cross-node messages) into an outage.  The
    C{HubBackplaneDown} alert (docs/alerts.yml) tells people instead.
    """

    isLeaf = True

    def __init__(self, factory: HubServerFactory) -> None:
        Resource.__init__(self)
        self.factory = factory

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        if self.factory.draining:
            request.setResponseCode(503)
            return b"draining\n"
        if not backplane_connected(self.factory.backplane):
            return b"ok\nbackplane disconnected: serving this node's connections only\n"
        return b"ok\n"


class StatusSnapshot:
    """
    The data of C{/status.json}.  Calls/s and errors/s are averaged over
    the last minute: since the oldest reading in it (the page reads every
    few seconds) or the start, else since the latest reading before it.
    """

    def __init__(self, factory: HubServerFactory, clock: IReactorTime | None = None) -> None:
        self.factory = factory
        self._clock = clock
        self._readings: deque[tuple[float, int, int]] = deque()

    def build(self) -> dict[str, Any]:
        from .. import __version__

        factory = self.factory
        now = (self._clock or factory.clock).seconds()
        hubs: dict[str, Any] = {}
        calls = errors = 0
        for name, runtime in sorted(factory.runtimes.items()):
            totals = runtime.traffic.totals(runtime.connections.values())
            calls += totals["calls"]
            errors += totals["call_errors"]
            hubs[name] = {"connections": len(runtime.connections), "calls": totals["calls"], "errors": totals["call_errors"]}
        started = factory.started_at
        readings = self._readings
        if not readings:
            readings.append((started if started is not None else now, 0, 0))
        # The oldest reading of the last minute, or the newest before it when none is that recent.
        while len(readings) >= 2 and readings[1][0] <= now - STATUS_WINDOW:
            readings.popleft()
        since, calls_then, errors_then = readings[0]
        readings.append((now, calls, errors))
        elapsed = now - since
        heartbeat = factory.heartbeat_window.summary(now)
        return {
            "schema": STATUS_SCHEMA,
            "version": __version__,
            "server_time": now,
            "uptime": None if started is None else max(0.0, now - started),
            "draining": factory.draining,
            "connections": factory.connection_count,
            "hubs": hubs,
            "heartbeat": {"window": STATUS_WINDOW, **heartbeat},
            "calls_per_s": (calls - calls_then) / elapsed if elapsed > 0 else 0.0,
            "errors_per_s": (errors - errors_then) / elapsed if elapsed > 0 else 0.0,
            "recent_disconnects": list(reversed(factory.recent_disconnects.entries)),
            "recent_abnormal_disconnects": list(reversed(factory.recent_disconnects.abnormal)),
            "resume": resume_status(factory),
        }


def resume_status(factory: HubServerFactory) -> dict[str, Any] | None:
    """Session resumption's figures (None: off): never a token, not even a session id."""
    policy = factory.resume_policy
    if policy is None:
        return None
    registries = factory.resume_registries.values()
    moves = session_moves(factory.backplane)
    refused: dict[str, int] = {}
    for registry in registries:
        for reason, count in registry.refused.items():
            refused[reason] = refused.get(reason, 0) + count
    return {
        "window": policy.window,
        "sessions": sum(len(registry) for registry in registries),
        "detached": sum(registry.detached for registry in registries),
        "resumed": sum(registry.resumed for registry in registries),
        "replayed": sum(registry.replayed for registry in registries),
        "refused": refused,
        "buffer_bytes": sum(registry.buffer_bytes for registry in registries),
        "moved_in": sum(registry.moved_in for registry in registries),
        "moved_out": sum(registry.moved_out for registry in registries),
        "claims": {outcome: moves[f"claims_{outcome}"] for outcome in CLAIM_OUTCOMES},
        "late_handovers": moves["late_handovers"],
        "forwarded": moves["forwarded"],
    }


class StatusJsonPage(Resource):
    """C{GET /status.json}: L{StatusSnapshot} as JSON (documented in C{docs/operations.md})."""

    isLeaf = True

    def __init__(self, factory: HubServerFactory, clock: IReactorTime | None = None) -> None:
        Resource.__init__(self)
        self.factory = factory
        self.snapshot = StatusSnapshot(factory, clock)

    def render_GET(self, request: Request) -> bytes:
        if not self.factory.host_allowed(request.getHeader("host")):
            request.setResponseCode(400, b"Host not allowed")
            return b"{}"
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(self.snapshot.build()).encode()
