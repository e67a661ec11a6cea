"""
Mount a hub endpoint on an existing C{twisted.web} site.

    root.putChild(b"hub", HubResource(HubServerFactory([ChatHub])))

Every path below the mount point reaches the factory, whose last segment
names the hub (C{/hub/chat}).  L{HubStatusPage} is the plain HTML page
C{twistd hub} serves on C{GET /} (or C{--status-path}).
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
from ._server import HubServerFactory, HubSpec

_UPGRADE_REQUIRED = (
    b"This is a twisted-hub WebSocket endpoint (subprotocol twisted-hub.v1): "
    b"connect with a WebSocket client, e.g. python3 -m twisted_hub call URL HUB.METHOD ARGS...\n"
)


@implementer(IResource)
class HubResource(WebSocketResource):
    """
    A C{twisted.web} resource that upgrades requests to hub connections.

    @param factory: the L{HubServerFactory} serving the hubs, or a sequence
        of hub classes to build one from (with C{factory_options} as its
        keyword arguments).

    A request that is not a WebSocket upgrade gets a plain C{426 Upgrade
    Required} answer, so the rest of the site keeps working normally (the
    HTTP connection stays usable for further requests).

    Listen with the site wrapped in a L{ConnectionGuard} (C{ConnectionGuard(site,
    factory.limits)}) so the factory's handshake deadline and connection caps
    apply from the accept: C{twisted.web} reads the HTTP request before this
    resource runs.
    """

    def __init__(self, factory: HubServerFactory | Sequence[HubSpec], **factory_options: Any) -> None:
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
    @param listening: the listen descriptions; the page shows only their
        scheme and port (L{public_listen_text}), never file names or options.
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
        self.listening = [public_listen_text(description) for description in listening]
        self.extra = list(extra)
        self._clock = clock
        #: (label, URL) links shown under the tables (the browser client, the demo page)
        self.links: list[tuple[str, str]] = []

    def render_GET(self, request: Request) -> bytes:
        from . import __version__

        if not self.factory.host_allowed(request.getHeader("host")):
            request.setResponseCode(400, b"Host not allowed")
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")  # type: ignore[no-untyped-call]
            return b"This host name is not served here.\n"
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
            + "".join(f'<p><a href="{e(url)}">{e(label)}</a></p>\n' for label, url in self.links)
            + "</body></html>\n"
        )
        request.setHeader(b"content-type", b"text/html; charset=utf-8")  # type: ignore[no-untyped-call]
        request.setHeader(b"cache-control", b"no-store")  # type: ignore[no-untyped-call]
        return page.encode("utf-8")


#: Listener types whose second field is a port number, and the scheme they serve.
_PORT_SCHEMES = {"tcp": "ws", "tcp6": "ws", "ssl": "wss"}


def public_listen_text(description: str) -> str:
    """
    What a visitor may learn about one listen description: the scheme and
    port (C{"ws, port 8080"}, C{"wss, port 8443"}), never an interface, a
    socket or key file name or another option.
    """
    kind, _, rest = description.strip().partition(":")
    if kind.isdigit():  # the old strports form "8080"
        return f"ws, port {kind}"
    port = rest.split(":", 1)[0]
    scheme = _PORT_SCHEMES.get(kind.lower())
    if scheme is not None and port.isdigit():
        return f"{scheme}, port {port}"
    if kind.lower() == "unix":
        return "a local (unix) socket"
    return "another endpoint"


def _segments(path: str) -> list[bytes]:
    return [s.encode() for s in path.strip("/").split("/") if s]


def check_status_path(hub_path: str, status_path: str) -> str:
    """
    Validate where the status page goes next to the hub endpoint; return it
    normalised (C{/} or C{/a/b}); raise C{ValueError} saying what is wrong.
    """
    if not status_path.startswith("/") or any(c in status_path for c in "?#% ") or "//" in status_path.rstrip("/"):
        raise ValueError(f"the status path must be a plain path like / or /status, got {status_path!r}")
    status = _segments(status_path)
    hub = _segments(hub_path)
    if status and (hub[: len(status)] == status or status[: len(hub)] == hub):
        raise ValueError(f"the status path {status_path!r} must not be the hub path {hub_path!r}, above or below it")
    return "/" + status_path.strip("/")


def build_site_root(
    factory: HubServerFactory, hub_path: str, status_page: Resource | None, status_path: str = "/"
) -> Resource:
    """
    A root resource with the hub endpoint at C{hub_path} and, if given, the
    status page at C{status_path}.
    """
    root = Resource()  # type: ignore[no-untyped-call]
    segments = _segments(hub_path)
    if not segments:
        raise ValueError("the hub path must have at least one segment (the status page is at /)")
    if status_page is not None:
        _put(root, _segments(check_status_path(hub_path, status_path)) or [b""], status_page)
    _put(root, segments, HubResource(factory))
    return root


def _put(root: Resource, segments: list[bytes], leaf: IResource) -> None:
    node = root
    for segment in segments[:-1]:
        child = node.children.get(segment)
        if child is None:
            child = Resource()  # type: ignore[no-untyped-call]
            node.putChild(segment, child)
        node = child
    node.putChild(segments[-1], leaf)
