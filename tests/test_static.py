"""The browser client and the demo page, as the hub serves them (twisted_hub._ops.static)."""

from __future__ import annotations

import gzip
from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import IResource, Resource, getChildForRequest
from twisted.web.test.requesthelper import DummyRequest

from twisted_hub import ClientScriptResource, Hub, HubService, hub, method
from twisted_hub._ops.static import _compressed as get_gzipped
from twisted_hub._ops.static import client_script, script_hash
from twisted_hub.demo import DEMO_HUBS

#: The size target of the served bundle (msgpack included), gzipped.
#: 20 KiB: streams with credit-based flow control (the client's async iterables, its producer
#: pump, the five stream messages: about 1.3 KB), the resume codec (about 0.4 KB) and the Node
#: download-progress watch came in the wave after the one that set 18 KiB (its own msgpack
#: encoder, the page-lifecycle watch, slow-link progress; 15 KiB before that).  A limit still:
#: a change that adds a kilobyte has to say why.
MAX_GZIPPED_BYTES = 20 * 1024


def get(root: Resource, path: str, headers: dict[str, str] | None = None) -> DummyRequest:
    """Render C{GET path} on a resource tree; the request holds the answer."""
    segments = path.lstrip("/").split("/")
    request = DummyRequest([s.encode() for s in segments])
    request.uri = path.encode()
    for name, value in (headers or {}).items():
        request.requestHeaders.setRawHeaders(name.encode(), [value.encode()])
    resource: IResource = getChildForRequest(root, request)
    body = resource.render(request)
    if isinstance(body, bytes):
        request.write(body)
    request.finish()
    return request


def header(request: DummyRequest, name: str) -> str | None:
    values = request.responseHeaders.getRawHeaders(name.encode())
    return values[0].decode() if values else None


def body(request: DummyRequest) -> bytes:
    return b"".join(request.written)


def mounted() -> Resource:
    root = Resource()  # type: ignore[no-untyped-call]
    root.putChild(b"client", ClientScriptResource())
    return root


class ClientScriptTests(SynchronousTestCase):
    def test_serves_the_bundle(self) -> None:
        """GET /client/twisted-hub.js answers the shipped bundle as JavaScript with a daily cache and an ETag."""
        request = get(mounted(), "/client/twisted-hub.js")
        self.assertEqual(request.responseCode or 200, 200)
        self.assertEqual(body(request), client_script())
        self.assertTrue(body(request).startswith(b"/*! twisted-hub "))
        self.assertEqual(header(request, "content-type"), "text/javascript; charset=utf-8")
        self.assertEqual(header(request, "cache-control"), "public, max-age=86400")
        self.assertEqual(header(request, "etag"), f'"{script_hash()}"')
        self.assertEqual(header(request, "access-control-allow-origin"), "*")

    def test_not_modified(self) -> None:
        """A matching If-None-Match gets 304 with no body; a stale one gets the file."""
        etag = f'"{script_hash()}"'
        fresh = get(mounted(), "/client/twisted-hub.js", {"If-None-Match": f'"old", {etag}'})
        self.assertEqual((fresh.responseCode, body(fresh)), (304, b""))
        stale = get(mounted(), "/client/twisted-hub.js", {"If-None-Match": '"old"'})
        self.assertEqual(body(stale), client_script())

    def test_gzip(self) -> None:
        """A client that accepts gzip gets the bundle gzipped, within MAX_GZIPPED_BYTES."""
        request = get(mounted(), "/client/twisted-hub.js", {"Accept-Encoding": "gzip, deflate"})
        self.assertEqual(header(request, "content-encoding"), "gzip")
        self.assertEqual(header(request, "vary"), "Accept-Encoding")
        self.assertEqual(gzip.decompress(body(request)), client_script())
        self.assertLessEqual(len(body(request)), MAX_GZIPPED_BYTES)

    def test_versioned_name_is_immutable(self) -> None:
        """twisted-hub.<hash>.js is the same file, cached for a year as immutable."""
        script = ClientScriptResource()
        root = Resource()  # type: ignore[no-untyped-call]
        root.putChild(b"client", script)
        self.assertEqual(script.versioned_name, f"twisted-hub.{script_hash()}.js")
        request = get(root, f"/client/{script.versioned_name}")
        self.assertEqual(body(request), client_script())
        self.assertEqual(header(request, "cache-control"), "public, max-age=31536000, immutable")

    def test_other_names_are_404(self) -> None:
        """Any other name below the mount point is a 404, including an outdated versioned name."""
        for name in ("other.js", "twisted-hub.0000000000000000.js", ""):
            self.assertEqual(get(mounted(), f"/client/{name}").responseCode, 404, name)

    def test_nothing_below_the_bundle(self) -> None:
        """A path below either name of the bundle is a 404, not the script (it is a file, not a directory)."""
        versioned = ClientScriptResource().versioned_name
        for path in ("twisted-hub.js/anything", "twisted-hub.js/", f"{versioned}/x.js", "twisted-hub.js/a/b"):
            request = get(mounted(), f"/client/{path}")
            self.assertEqual(request.responseCode, 404, path)
            self.assertNotIn(client_script()[:40], body(request), path)


@hub("rooms")
class RoomsHub(Hub):
    @method
    def ping(self) -> str:
        return "pong"


def service_root(hubs: Any, path: str = "/hub") -> Resource:
    service = HubService(hubs, ["tcp:0:interface=127.0.0.1"], path=path, clock=MemoryReactorClock())
    assert service.root is not None
    return service.root


class HubServiceMountTests(SynchronousTestCase):
    def test_twistd_hub_serves_client_and_demo(self) -> None:
        """With the demo hubs, HubService serves /client/, the demo page, and links them from the status page."""
        root = service_root(list(DEMO_HUBS))
        self.assertEqual(body(get(root, "/client/twisted-hub.js")), client_script())
        page = body(get(root, "/demo/")).decode()
        self.assertIn("<title>twisted-hub demo</title>", page)
        self.assertIn(f'from "../client/twisted-hub.{script_hash()}.js"', page)
        self.assertIn("`${scheme}//${location.host}/hub`", page)
        self.assertNotIn("__HUB_PATH__", page)
        self.assertIn('<a href="/">Status page</a>', page)
        status = body(get(root, "/")).decode()
        self.assertIn('<a href="/client/twisted-hub.js">browser client</a>', status)
        self.assertIn('<a href="/demo/">demo page (chat + heartbeats)</a>', status)

    def test_demo_page_follows_the_hub_path(self) -> None:
        """With --path /api/v2/hub the demo page connects there."""
        page = body(get(service_root(list(DEMO_HUBS), "/api/v2/hub"), "/demo/")).decode()
        self.assertIn("`${scheme}//${location.host}/api/v2/hub`", page)

    def test_demo_redirects_to_the_directory(self) -> None:
        """/demo redirects to /demo/ so the page's relative links resolve."""
        request = get(service_root(list(DEMO_HUBS)), "/demo")
        self.assertEqual(request.responseCode, 302)
        self.assertEqual(header(request, "location"), "demo/")

    def test_nothing_below_the_demo_page(self) -> None:
        """Only /demo/ is the demo page: paths below it are 404."""
        root = service_root(list(DEMO_HUBS))
        for path in ("/demo/anything", "/demo//x", "/demo/index.html/x"):
            request = get(root, path)
            self.assertEqual(request.responseCode, 404, path)
            self.assertNotIn(b"<title>twisted-hub demo</title>", body(request), path)

    def test_no_demo_page_for_other_hubs(self) -> None:
        """With the application's own hubs, the client is served but no demo page (it needs the demo chat hub)."""
        root = service_root([RoomsHub])
        self.assertEqual(body(get(root, "/client/twisted-hub.js")), client_script())
        self.assertEqual(get(root, "/demo/").responseCode, 404)
        self.assertNotIn("demo page", body(get(root, "/")).decode())


class DocsMountExampleTests(SynchronousTestCase):
    def test_mount_example(self) -> None:
        """docs/javascript.md's mount example serves the client next to the hub endpoint."""
        from ._docs import named_blocks

        language, code = named_blocks("docs/javascript.md")["mount"]
        self.assertEqual(language, "python")
        namespace: dict[str, Any] = {"__name__": "docs_javascript"}
        exec(compile(code, "docs/javascript.md", "exec"), namespace)
        root = namespace["root"]
        self.assertEqual(body(get(root, "/client/twisted-hub.js")), client_script())
        self.assertEqual(get(root, "/hub/chat").responseCode, 426)


class DocsSizeTests(SynchronousTestCase):
    def test_recorded_size(self) -> None:
        """The bundle size docs/javascript.md records is the served one (within 3 %: it moves with every change)."""
        import re
        from pathlib import Path

        text = (Path(__file__).resolve().parent.parent / "docs" / "javascript.md").read_text()
        match = re.search(r"msgpack included: ([\d,]+) bytes, ([\d,]+) bytes gzipped as\s+served", text)
        assert match is not None
        plain, gzipped = (int(group.replace(",", "")) for group in match.groups())
        self.assertLessEqual(abs(plain / len(client_script()) - 1), 0.03, (plain, len(client_script())))
        self.assertLessEqual(abs(gzipped / len(get_gzipped()) - 1), 0.03, (gzipped, len(get_gzipped())))


class VersionTests(SynchronousTestCase):
    def test_bundle_version_is_the_package_version(self) -> None:
        """The npm package (js/package.json) and the served bundle carry the Python package's version."""
        import json
        from pathlib import Path

        import twisted_hub

        package = json.loads((Path(__file__).resolve().parent.parent / "js" / "package.json").read_text())
        self.assertEqual(package["version"], twisted_hub.__version__)
        self.assertTrue(client_script().startswith(f"/*! twisted-hub {twisted_hub.__version__} browser client".encode()))
