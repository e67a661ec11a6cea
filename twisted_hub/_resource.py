"""
Mount a hub endpoint on an existing C{twisted.web} site.

    root.putChild(b"hub", HubResource(HubServerFactory([ChatHub])))

Every path below the mount point reaches the factory, whose last segment
names the hub (C{/hub/chat}).  L{HubStatusPage} is the plain HTML page
C{twistd hub} serves on C{GET /}.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request
from zope.interface import implementer

from ._heartbeat import HeartbeatPolicy
from ._hub import Hub
from ._server import HubServerFactory

_UPGRADE_REQUIRED = (
    b"This is a twisted-hub WebSocket endpoint (subprotocol twisted-hub.v1): "
    b"connect with a WebSocket client, e.g. python3 -m twisted_hub call URL HUB.METHOD ARGS...\n"
)


@implementer(IResource)
class HubResource(WebSocketResource):  # type: ignore[misc]
    """
    A C{twisted.web} resource that upgrades requests to hub connections.

    @param factory: the L{HubServerFactory} serving the hubs, or a sequence
        of hub classes to build one from (with C{factory_options} as its
        keyword arguments).

    A request that is not a WebSocket upgrade gets a plain C{426 Upgrade
    Required} answer, so the rest of the site keeps working normally (the
    HTTP connection stays usable for further requests).
    """

    def __init__(self, factory: HubServerFactory | Sequence[type[Hub]], **factory_options: Any) -> None:
        if not isinstance(factory, HubServerFactory):
            factory = HubServerFactory(factory, **factory_options)
        elif factory_options:
            raise TypeError("factory options are for building a factory from hub classes")
        super().__init__(factory)  # type: ignore[no-untyped-call]
        self.factory = factory

    def render(self, request: Request) -> Any:
        upgrade = request.getHeader(b"upgrade") or b""
        if upgrade.lower() != b"websocket":
            request.setResponseCode(426, b"Upgrade Required")
            request.setHeader(b"upgrade", b"websocket")  # type: ignore[no-untyped-call]
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")  # type: ignore[no-untyped-call]
            return _UPGRADE_REQUIRED
        return super().render(request)  # type: ignore[no-untyped-call]


def _policy_text(policy: HeartbeatPolicy) -> str:
    if not policy.enabled:
        return "off"
    timeout = "never" if policy.timeout is None else f"{policy.timeout:g} s"
    return f"every {policy.interval:g} s, timeout {timeout}"


class HubStatusPage(Resource):
    """
    A plain HTML page for people: server time, connections per hub and
    heartbeat settings.  Served by C{twistd hub} on C{GET /}.

    @param factory: the factory whose hubs it describes.
    @param hub_path: where the hub endpoint is mounted (shown as URLs).
    @param listening: the listen descriptions, shown as they were given.
    @param extra: more C{(label, value)} rows (origin policy, limits...).
    """

    isLeaf = True

    def __init__(
        self,
        factory: HubServerFactory,
        hub_path: str = "/hub",
        listening: Sequence[str] = (),
        extra: Iterable[tuple[str, str]] = (),
        clock: IReactorTime | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.factory = factory
        self.hub_path = "/" + hub_path.strip("/")
        self.listening = list(listening)
        self.extra = list(extra)
        self._clock = clock

    def render_GET(self, request: Request) -> bytes:
        from . import __version__

        clock = self._clock or self.factory.clock
        now = datetime.fromtimestamp(clock.seconds(), tz=UTC)
        e = html.escape
        rows = []
        for name, runtime in sorted(self.factory.runtimes.items()):
            rows.append(
                f"<tr><td>{e(name)}</td><td><code>{e(self.hub_path.rstrip('/'))}/{e(name)}</code></td>"
                f"<td>{len(runtime.connections)}</td><td>{e(_policy_text(runtime.heartbeat_policy))}</td></tr>"
            )
        settings = [
            ("server time (UTC)", now.isoformat(timespec="milliseconds")),
            ("connections", str(self.factory.connection_count)),
            ("heartbeat (default)", _policy_text(self.factory.heartbeat)),
            ("max message size", f"{self.factory.max_message_size} bytes"),
        ]
        if self.listening:
            settings.append(("listening on", ", ".join(self.listening)))
        settings.extend(self.extra)
        settings.extend(self.factory.backplane.status())
        setting_rows = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in settings)
        page = (
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>twisted-hub</title></head><body>\n"
            f"<h1>twisted-hub {e(__version__)}</h1>\n"
            f"<table>{setting_rows}</table>\n"
            "<h2>Hubs</h2>\n<table><tr><th>hub</th><th>path</th><th>connections</th><th>heartbeat</th></tr>"
            f"{''.join(rows)}</table>\n"
            "<p>Connect with a WebSocket client offering the subprotocol <code>twisted-hub.v1</code>, e.g. "
            f"<code>python3 -m twisted_hub call ws://HOST:PORT{e(self.hub_path)} echo.echo hello</code></p>\n"
            "</body></html>\n"
        )
        request.setHeader(b"content-type", b"text/html; charset=utf-8")  # type: ignore[no-untyped-call]
        request.setHeader(b"cache-control", b"no-store")  # type: ignore[no-untyped-call]
        return page.encode("utf-8")


def build_site_root(factory: HubServerFactory, hub_path: str, status_page: Resource | None) -> Resource:
    """
    A root resource with the hub endpoint at C{hub_path} and, if given, the
    status page at C{/}.
    """
    root = Resource()  # type: ignore[no-untyped-call]
    if status_page is not None:
        root.putChild(b"", status_page)
    segments = [s.encode() for s in hub_path.strip("/").split("/") if s]
    if not segments:
        raise ValueError("the hub path must have at least one segment (the status page is at /)")
    node = root
    for segment in segments[:-1]:
        child = Resource()  # type: ignore[no-untyped-call]
        node.putChild(segment, child)
        node = child
    node.putChild(segments[-1], HubResource(factory))
    return root
