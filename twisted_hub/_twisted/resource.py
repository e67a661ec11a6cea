"""
Mount a hub endpoint on an existing C{twisted.web} site.

    root.putChild(b"hub", HubResource(HubServerFactory([ChatHub])))

Every path below the mount point reaches the factory, whose last segment
names the hub (C{/hub/chat}).  L{HubStatusPage} is the live status page
C{twistd hub} serves on C{GET /} (or C{--status-path}).
"""

from __future__ import annotations

import html
import inspect
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Unpack, cast

from autobahn.twisted.resource import WebSocketResource
from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request
from zope.interface import implementer

from .._core.base_error import HubArgumentError
from .._core.heartbeat import HeartbeatPolicy
from .._hubs.auth import redact_uri
from .server import HubServerFactory, HubServerProtocol, HubSpec, ResourceFactoryOptions

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

    def __init__(
        self, factory: HubServerFactory | Sequence[HubSpec], **factory_options: Unpack[ResourceFactoryOptions]
    ) -> None:
        if not isinstance(factory, HubServerFactory):
            factory = HubServerFactory(factory, **factory_options)
        elif factory_options:
            raise HubArgumentError("factory options are for building a factory from hub classes")
        WebSocketResource.__init__(self, factory)
        self.factory = factory

    def render(self, request: Request) -> Any:
        upgrade = request.getHeader(b"upgrade") or b""
        if upgrade.lower() != b"websocket":
            # (an access token in the query must not reach the site's access log)
            request.uri = redact_uri(request.uri)
            request.setResponseCode(426, b"Upgrade Required")
            request.setHeader(b"upgrade", b"websocket")
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return _UPGRADE_REQUIRED
        # The connection learns where the endpoint is mounted: with one hub,
        # the mount path reaches it, and a wrong name below it is refused.
        mount = "/" + "/".join(segment.decode("utf-8", "replace") for segment in request.prepath or [])
        # autobahn reads the request (the token too) from request.uri as it
        # takes the connection over; whatever logs the request later sees
        # the token redacted.
        rendered = WebSocketResource(_Mounted(self.factory, mount)).render(request)
        request.uri = redact_uri(request.uri)
        return rendered


class _Mounted:
    """What L{WebSocketResource.render} asks of a factory, building protocols that know their mount path."""

    def __init__(self, factory: HubServerFactory, mount: str) -> None:
        self._factory = factory
        self._mount = mount

    def buildProtocol(self, address: Any) -> HubServerProtocol | None:
        protocol = cast("HubServerProtocol | None", self._factory.buildProtocol(address))
        if protocol is not None:
            protocol.mount_path = self._mount
        return protocol


def call_example(factory: HubServerFactory) -> str:
    """
    The C{HUB.METHOD ARGS} of the page's command-line example: C{echo.echo
    hello} when the demo echo hub is served, else a method of a served hub
    (one needing the fewest arguments, named in capitals).
    """
    echo = factory.runtimes.get("echo")
    if echo is not None and "echo" in echo.methods:
        return "echo.echo hello"
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    candidates: list[tuple[int, str, str, list[str]]] = []
    for hub_name, runtime in factory.runtimes.items():
        for method_name, spec in runtime.methods.items():
            required = [
                parameter.name.upper() for parameter in list(spec.signature.parameters.values())[1:]  # after self
                if parameter.kind in positional and parameter.default is inspect.Parameter.empty
            ]
            candidates.append((len(required), hub_name, method_name, required))
    if not candidates:
        return f"{min(factory.runtimes)}.METHOD"
    _, hub_name, method_name, required = min(candidates)
    return " ".join([f"{hub_name}.{method_name}", *required])


def _policy_text(policy: HeartbeatPolicy) -> str:
    if not policy.enabled:
        return "off"
    timeout = "never" if policy.timeout is None else f"{policy.timeout:g} s"
    return f"every {policy.interval:g} s, timeout {timeout}"


class HubStatusPage(Resource):
    """
    The status page for people: settings, connections per hub and their
    heartbeat policies, and (with L{json_url}) a live section refreshed from
    C{/status.json}: heartbeat success and latency, calls/s, errors/s, the
    last abnormal and the last of all disconnects.  Served by C{twistd hub}
    on C{GET /}.

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
        Resource.__init__(self)
        self.factory = factory
        self.hub_path = "/" + hub_path.strip("/")
        self.listening = [public_listen_text(description) for description in listening]
        self.extra = list(extra)
        self._clock = clock
        #: (label, URL) links shown under the tables (the browser client, the demo page)
        self.links: list[tuple[str, str]] = []
        #: where the page reads its live data (L{StatusJsonPage}); None: a static page
        self.json_url: str | None = None

    def render_GET(self, request: Request) -> bytes:
        from .. import __version__

        if not self.factory.host_allowed(request.getHeader("host")):
            request.setResponseCode(400, b"Host not allowed")
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
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
        # the cells the live script refreshes have ids (a header's text is no address)
        live_ids = {"server time (UTC)": ' id="server-time"', "connections": ' id="total-connections"'}
        setting_rows = "".join(f"<tr><th>{e(k)}</th><td{live_ids.get(k, '')}>{e(v)}</td></tr>" for k, v in settings)
        live = ""
        if self.json_url is not None:
            live = _LIVE_SECTION + f'<script data-status-url="{e(self.json_url)}">{_LIVE_SCRIPT}</script>\n'
        page = (
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>twisted-hub</title>\n"
            f"<meta name=\"viewport\" content=\"width=device-width\"><style>{_STYLE}</style></head><body>\n"
            f"<h1>twisted-hub {e(__version__)}</h1>\n"
            f"<table>{setting_rows}</table>\n"
            + live
            + "<h2>Hubs</h2>\n<table id=\"hubs\"><tr><th>hub</th><th>path</th><th>connections</th><th>heartbeat</th></tr>"
            f"{''.join(rows)}</table>\n"
            "<p>Connect with a WebSocket client offering the subprotocol <code>twisted-hub.v1</code>, e.g. "
            f"<code>python3 -m twisted_hub call ws://HOST:PORT{e(self.hub_path)} "
            f"{e(call_example(self.factory))}</code></p>\n"
            + "".join(f'<p><a href="{e(url)}">{e(label)}</a></p>\n' for label, url in self.links)
            + "</body></html>\n"
        )
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return page.encode("utf-8")


_STYLE = (
    "body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#1d2330;"
    "background:#f6f7f9}h1{font-size:1.5rem}h2{font-size:1.1rem;margin-top:1.6rem}"
    "table{border-collapse:collapse;width:100%;background:#fff;box-shadow:0 1px 2px #0002;margin:.5rem 0}"
    "th,td{text-align:left;padding:.35rem .7rem;border-bottom:1px solid #e3e6ea}th{font-weight:600;width:14rem}"
    "code{background:#eef0f3;padding:0 .25rem;border-radius:3px}"
    ".tiles{display:flex;flex-wrap:wrap;gap:.7rem}.tile{background:#fff;box-shadow:0 1px 2px #0002;"
    "padding:.6rem .9rem;min-width:9rem;border-radius:4px}.tile b{display:block;font-size:1.35rem}"
    ".bad{color:#b3261e}.muted{color:#6b7280}"
)

_LIVE_SECTION = (
    "<h2>Live <span id=\"updated\" class=\"muted\"></span></h2>\n<div class=\"tiles\">"
    "<div class=\"tile\">uptime<b id=\"uptime\">-</b></div>"
    "<div class=\"tile\">connections<b id=\"connections\">-</b></div>"
    "<div class=\"tile\">heartbeats answered (1 min)<b id=\"hb-rate\">-</b></div>"
    "<div class=\"tile\">heartbeat p50 / p99<b id=\"hb-latency\">-</b></div>"
    "<div class=\"tile\">calls/s<b id=\"calls\">-</b></div>"
    "<div class=\"tile\">errors/s<b id=\"errors\">-</b></div>"
    "<div class=\"tile\">sessions detached / resumed<b id=\"resume\">-</b></div></div>\n"
    "<h2>Abnormal disconnects</h2>\n<p class=\"muted\">Timeouts, protocol errors, slow consumers, lost "
    "connections... (not normal closes, going-away or kicks): the last 20.</p>\n"
    "<table id=\"abnormal-disconnects\"><tr><th>time (UTC)</th><th>hub</th>"
    "<th>connection</th><th>reason</th></tr></table>\n"
    "<h2>Recent disconnects</h2>\n<table id=\"disconnects\"><tr><th>time (UTC)</th><th>hub</th>"
    "<th>connection</th><th>reason</th></tr></table>\n"
)

# Reads /status.json every 2 s and fills the live section (textContent only:
# no markup from data).  Cells are found by id or inside their own table only.
_LIVE_SCRIPT = """
(function(){
var url=document.currentScript.dataset.statusUrl;
function $(id){return document.getElementById(id);}
function ms(s){return s==null?"-":(s*1000).toFixed(1)+" ms";}
function rate(x){return x===0?"0.0":x>=0.1?x.toFixed(1):x.toPrecision(1);}
function dur(s){if(s==null)return "-";s=Math.floor(s);var d=Math.floor(s/86400),h=Math.floor(s%86400/3600),
m=Math.floor(s%3600/60);return (d?d+"d ":"")+(d||h?h+"h ":"")+m+"m "+(s%60)+"s";}
function cell(row,text){var td=document.createElement("td");td.textContent=text;row.appendChild(td);}
function fill(table,list,empty){while(table.rows.length>1)table.deleteRow(1);
if(!list.length){var none=table.insertRow();cell(none,empty);none.cells[0].colSpan=4;none.className="muted";}
list.forEach(function(d){var row=table.insertRow();
cell(row,new Date(d.time*1000).toISOString().slice(11,19));cell(row,d.hub);cell(row,d.id);
cell(row,d.kind+(d.code!=null?" ("+d.code+")":"")+(d.reason?": "+d.reason:""));});}
function show(st){
$("uptime").textContent=dur(st.uptime);$("connections").textContent=st.connections;
var hb=st.heartbeat;$("hb-rate").textContent=hb.success_rate==null?"-":(hb.success_rate*100).toFixed(1)+" %";
$("hb-rate").className=hb.success_rate!=null&&hb.success_rate<0.99?"bad":"";
$("hb-latency").textContent=ms(hb.latency_p50)+" / "+ms(hb.latency_p99);
$("calls").textContent=rate(st.calls_per_s);$("errors").textContent=rate(st.errors_per_s);
$("errors").className=st.errors_per_s>0?"bad":"";
var rs=st.resume;$("resume").textContent=rs?rs.detached+" / "+rs.resumed:"off";
fill($("abnormal-disconnects"),st.recent_abnormal_disconnects||[],"none");
fill($("disconnects"),st.recent_disconnects,"none yet");
var hubs=$("hubs");for(var i=1;i<hubs.rows.length;i++){var h=st.hubs[hubs.rows[i].cells[0].textContent];
if(h)hubs.rows[i].cells[2].textContent=h.connections;}
if($("server-time"))$("server-time").textContent=new Date(st.server_time*1000).toISOString();
if($("total-connections"))$("total-connections").textContent=st.connections;
$("updated").textContent="updated "+new Date(st.server_time*1000).toISOString().slice(11,19)+" UTC";}
function poll(){fetch(url,{cache:"no-store"}).then(function(r){return r.json();}).then(show)
.catch(function(){$("updated").textContent="(server not answering)";}).then(function(){setTimeout(poll,2000);});}
poll();})();
"""


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
    normalised (C{/} or C{/a/b}); raise L{HubArgumentError} saying what is wrong.
    """
    if not status_path.startswith("/") or any(c in status_path for c in "?#% ") or "//" in status_path.rstrip("/"):
        raise HubArgumentError(f"the status path must be a plain path like / or /status, got {status_path!r}")
    status = _segments(status_path)
    hub = _segments(hub_path)
    if status and (hub[: len(status)] == status or status[: len(hub)] == hub):
        raise HubArgumentError(f"the status path {status_path!r} must not be the hub path {hub_path!r}, above or below it")
    return "/" + status_path.strip("/")


def status_json_path(status_path: str) -> str:
    """Where the status page's data is: C{/status.json} beside a page at C{/}, C{/x.json} beside one at C{/x}."""
    return (status_path.rstrip("/") or "/status") + ".json"


def build_site_root(
    factory: HubServerFactory, hub_path: str, status_page: Resource | None, status_path: str = "/"
) -> Resource:
    """
    A root resource with the hub endpoint at C{hub_path} and, if given, the
    status page at C{status_path}.
    """
    root = Resource()
    segments = _segments(hub_path)
    if not segments:
        raise HubArgumentError("the hub path must have at least one segment (the status page is at /)")
    if status_page is not None:
        _put(root, _segments(check_status_path(hub_path, status_path)) or [b""], status_page)
    _put(root, segments, HubResource(factory))
    return root


def mount(root: Resource, hub_path: str, path: str, leaf: IResource) -> None:
    """Put C{leaf} at C{path} of a site built by L{build_site_root} (not on the hub path)."""
    _put(root, _segments(check_status_path(hub_path, path)), leaf)


def _put(root: Resource, segments: list[bytes], leaf: IResource) -> None:
    node = root
    for segment in segments[:-1]:
        child = node.children.get(segment)
        if child is None:
            child = Resource()
            node.putChild(segment, child)
        node = child
    node.putChild(segments[-1], leaf)
