"""
The browser client, served by the hub (as socket.io serves its client), and
the demo page of C{twistd hub}.

    root.putChild(b"client", ClientScriptResource())

serves C{/client/twisted-hub.js}: the bundle built from C{js/} (one ES
module, msgpack included) that ships inside the wheel.  Two names:

  - C{twisted-hub.js}: revalidated daily (C{max-age=86400}) with an C{ETag}
    (C{304 Not Modified} on a matching C{If-None-Match});
  - C{twisted-hub.<hash>.js}: the same bytes under a name that changes with
    them, cached for a year (C{immutable}); L{ClientScriptResource.versioned_name}.

Both are sent gzipped to clients that accept it.  Nothing below them
exists: C{twisted-hub.js/anything} is a 404, as for a file on disk.
"""

from __future__ import annotations

import gzip
import hashlib
import html
from functools import cache
from importlib.resources import files

from twisted.web.resource import Resource
from twisted.web.server import Request
from twisted.web.util import Redirect

from .._twisted.server import HubServerFactory

SCRIPT_NAME = "twisted-hub.js"
#: Cache lifetimes, seconds.
PLAIN_MAX_AGE = 86400
VERSIONED_MAX_AGE = 31536000


@cache
def client_script() -> bytes:
    """The served bundle (package data C{twisted_hub/static/twisted-hub.js})."""
    return files("twisted_hub").joinpath("static", SCRIPT_NAME).read_bytes()


@cache
def _compressed() -> bytes:
    return gzip.compress(client_script(), compresslevel=9, mtime=0)


def script_hash() -> str:
    """A short content hash of the bundle (its ETag and versioned name)."""
    return hashlib.sha256(client_script()).hexdigest()[:16]


class ClientScriptResource(Resource):
    """
    C{GET <mount>/twisted-hub.js} and C{GET <mount>/twisted-hub.<hash>.js}:
    the browser client.  Mount it where you like
    (C{root.putChild(b"client", ClientScriptResource())}).
    """

    def __init__(self) -> None:
        Resource.__init__(self)
        self.etag = f'"{script_hash()}"'.encode("ascii")
        self.versioned_name = f"twisted-hub.{script_hash()}.js"

    def getChild(self, path: bytes, request: Request) -> Resource:
        name = path.decode("utf-8", "replace")
        if name == SCRIPT_NAME:
            return _ScriptFile(self.etag, PLAIN_MAX_AGE, immutable=False)
        if name == self.versioned_name:
            return _ScriptFile(self.etag, VERSIONED_MAX_AGE, immutable=True)
        return _NotFound()


class TextAnswer(Resource):
    """A leaf that answers every request with C{status} (and C{phrase}) and a line of plain text."""

    isLeaf = True

    def __init__(self, status: int, text: bytes, phrase: bytes | None = None) -> None:
        Resource.__init__(self)
        self.status = status
        self.text = text
        self.phrase = phrase

    def render(self, request: Request) -> bytes:
        request.setResponseCode(self.status, self.phrase)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return self.text


def _NotFound() -> TextAnswer:
    return TextAnswer(404, b"Not found: the client is at twisted-hub.js\n")


class _ScriptFile(Resource):
    """The bundle itself: a file, so no path continues below it (404 there)."""

    def __init__(self, etag: bytes, max_age: int, immutable: bool) -> None:
        Resource.__init__(self)
        self.etag = etag
        self.cache_control = f"public, max-age={max_age}" + (", immutable" if immutable else "")

    def getChild(self, path: bytes, request: Request) -> Resource:
        return _NotFound()

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/javascript; charset=utf-8")
        request.setHeader(b"cache-control", self.cache_control.encode("ascii"))
        request.setHeader(b"etag", self.etag)
        request.setHeader(b"vary", b"Accept-Encoding")
        # A public file: pages of other origins may import it as a module (which needs CORS).
        request.setHeader(b"access-control-allow-origin", b"*")
        if _etag_matches(request.getHeader(b"if-none-match"), self.etag):
            request.setResponseCode(304)
            return b""
        accepted = (request.getHeader(b"accept-encoding") or b"").lower()
        if b"gzip" in accepted:
            request.setHeader(b"content-encoding", b"gzip")
            return _compressed()
        return client_script()


def _etag_matches(header: bytes | None, etag: bytes) -> bool:
    if header is None:
        return False
    candidates = [c.strip() for c in header.split(b",")]
    return b"*" in candidates or etag in candidates or b"W/" + etag in candidates


class DemoPage(Resource):
    """
    The demo page of C{twistd hub}: chat on the demo C{chat} hub and a live
    heartbeat panel (round trip, clock offset, server time), using the
    served client.  C{hub_path} is where the hub endpoint is mounted,
    C{status_url} where the status page is (None: not served, no link).
    Only C{/demo/} itself is the page: paths below it are 404.
    """

    def __init__(self, hub_path: str, script_name: str, status_url: str | None = "/") -> None:
        Resource.__init__(self)
        template = files("twisted_hub").joinpath("static", "demo.html").read_text("utf-8")
        path = "/" + hub_path.strip("/")
        status_link = "" if status_url is None else f' <a href="{html.escape(status_url)}">Status page</a>.'
        self.page = (
            template.replace("__HUB_PATH__", path)
            .replace("__SCRIPT__", f"../client/{script_name}")
            .replace("__STATUS_LINK__", status_link)
            .encode("utf-8")
        )

    def getChild(self, path: bytes, request: Request) -> Resource:
        return _NotFound()

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        return self.page


def serves_demo_hubs(factory: HubServerFactory) -> bool:
    """Does the factory serve the demo C{chat} hub (the one the demo page uses)?"""
    from ..demo import ChatHub

    runtime = factory.runtimes.get("chat")
    return runtime is not None and runtime.hub_class is ChatHub


def mount_client(
    root: Resource, factory: HubServerFactory, hub_path: str, status_url: str | None = "/"
) -> list[tuple[str, str]]:
    """
    Put the client at C{/client/} and, when the demo hubs are served, the
    demo page at C{/demo/} (linking to the status page at C{status_url});
    returns (label, path) links for the status page.
    """
    script = ClientScriptResource()
    root.putChild(b"client", script)
    # Absolute: the status page may be served at another path than /.
    links = [("browser client", f"/client/{SCRIPT_NAME}")]
    if serves_demo_hubs(factory):
        root.putChild(b"demo", _DemoDirectory(DemoPage(hub_path, script.versioned_name, status_url)))
        links.append(("demo page (chat + heartbeats)", "/demo/"))
    return links


class _DemoDirectory(Resource):
    """C{/demo} redirects to C{/demo/}, which is the page."""

    def __init__(self, page: DemoPage) -> None:
        Resource.__init__(self)
        self.page = page

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"":
            return self.page
        return _NotFound()

    def render_GET(self, request: Request) -> bytes:
        page: bytes = Redirect(b"demo/").render(request)
        return page

