"""
The user's own files beside the hub (twisted_hub._ops.files): HubService(static=...)
and twistd hub --static, in memory and through a real twistd on loopback.
"""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from twisted_hub import HubArgumentError, HubService
from twisted_hub._ops.files import parse_static_option
from twisted_hub._ops.static import client_script
from twisted_hub.demo import DEMO_HUBS
from twisted_hub.tap import Options, makeService

from ._twistd import TWISTD, spawn_python, started_port
from .test_static import RoomsHub, body, get, header

SECRET = b"the secret beside the folder"


def make_site(root: Path) -> Path:
    """A folder of files to serve, with a secret next to it (outside) and the names a hub path shadows."""
    site = root / "site"
    (site / "sub").mkdir(parents=True)
    (site / "sub" / "deeper").mkdir()
    (site / "index.html").write_text("<!DOCTYPE html><title>my page</title>\n")
    (site / "app.mjs").write_text("export const answer = 42;\n")
    (site / "style.css").write_text("body { color: red }\n")
    (site / "sub" / "note.txt").write_text("a note\n")
    (site / "sub" / "deeper" / "index.html").write_text("deeper\n")
    (site / ".git").mkdir()
    (site / ".git" / "config").write_text("[core]\n")
    (site / ".env").write_text("PASSWORD=x\n")
    (site / ".well-known").mkdir()
    (site / ".well-known" / "security.txt").write_text("Contact: mailto:sec@example.com\n")
    (site / "health").write_text("not the hub's health\n")
    (site / "client").mkdir()
    (site / "client" / "twisted-hub.js").write_text("not the client\n")
    (root / "secret.txt").write_bytes(SECRET)
    return site


class Folder(SynchronousTestCase):
    def setUp(self) -> None:
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        self.tmp = Path(directory.name)
        self.site = make_site(self.tmp)

    def service(self, static: Any = None, hubs: Any = None, **options: Any) -> HubService:
        return HubService(
            list(DEMO_HUBS) if hubs is None else hubs, ["tcp:0:interface=127.0.0.1"],
            clock=MemoryReactorClock(), static=self.site if static is None else static, **options,
        )

    def root(self, static: Any = None, **options: Any) -> Any:
        service = self.service(static, **options)
        assert service.site is not None
        return service.site.resource


class StaticFolderTests(Folder):
    def test_folder_at_root(self) -> None:
        """A folder at / answers / with its index.html and its files with their types, revalidated and not sniffed."""
        root = self.root()
        front = get(root, "/")
        self.assertEqual(body(front), b"<!DOCTYPE html><title>my page</title>\n")
        self.assertEqual(header(front, "content-type"), "text/html")
        self.assertEqual(header(front, "cache-control"), "no-cache")
        self.assertEqual(header(front, "x-content-type-options"), "nosniff")
        for path, content_type in (("/app.mjs", "text/javascript"), ("/style.css", "text/css"),
                                   ("/sub/note.txt", "text/plain"), ("/index.html", "text/html")):
            request = get(root, path)
            self.assertEqual((request.responseCode or 200, header(request, "content-type")), (200, content_type), path)
        self.assertEqual(body(get(root, "/sub/note.txt")), b"a note\n")
        self.assertEqual(body(get(root, "/sub/deeper/")), b"deeper\n")
        self.assertEqual(get(root, "/missing.html").responseCode, 404)

    def test_a_directory_redirects_to_its_slash(self) -> None:
        """/sub/deeper (a folder) redirects to /sub/deeper/, so the page's relative links resolve."""
        request = get(self.root(), "/sub/deeper")
        self.assertEqual(request.responseCode, 302)
        self.assertEqual(header(request, "location"), "/sub/deeper/")

    def test_the_hub_wins(self) -> None:
        """The hub's own paths answer even where the folder has a file of that name; the status page moves to /status."""
        root = self.root()
        self.assertEqual(body(get(root, "/health")), b"ok\n")
        self.assertEqual(body(get(root, "/client/twisted-hub.js")), client_script())
        self.assertEqual(get(root, "/hub").responseCode, 426)
        self.assertEqual(get(root, "/hub/chat").responseCode, 426)
        self.assertIn(b"<title>twisted-hub demo</title>", body(get(root, "/demo/")))
        status = body(get(root, "/status")).decode()
        self.assertIn("<title>twisted-hub</title>", status)
        self.assertIn('<a href="/">static files at /</a>', status)
        self.assertEqual(header(get(root, "/status.json"), "content-type"), "application/json")

    def test_demo_page_links_the_moved_status_page(self) -> None:
        """The demo page links the status page where it is (/status beside a folder at /), or not at all."""
        demo = body(get(self.root(), "/demo/")).decode()
        self.assertIn('<a href="/status">Status page</a>', demo)
        self.assertNotIn("__STATUS_LINK__", demo)
        self.assertNotIn("Status page", body(get(self.root(status_page=False), "/demo/")).decode())

    def test_hidden_files_are_logged(self) -> None:
        """Each file of the folder that a hub path hides is named in a warning when the service is built."""
        logs = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.service()
        hidden = sorted(
            (event["file"], event["hub_path"]) for event in logs if event.get("log_format", "").startswith("static file")
        )
        self.assertEqual(hidden, [(str(self.site / "client"), "/client"), (str(self.site / "health"), "/health")])

    def test_nothing_outside_the_folder(self) -> None:
        """.. segments, segments holding a slash (an encoded %2F) and NUL never leave the folder: 404, no secret."""
        root = self.root()
        # Twisted splits the raw path on "/" and then unquotes each segment: %2e%2e is "..", %2F a "/" inside one.
        for path in ("/../secret.txt", "/sub/../../secret.txt", "/sub/../secret.txt", "/../site/index.html"):
            request = get(root, path)
            self.assertEqual(request.responseCode, 404, path)
            self.assertNotIn(SECRET, body(request), path)
        for segments in ([b"..", b"secret.txt"], [b"../secret.txt"], [b"sub", b"../../secret.txt"],
                         [b"..%2fsecret.txt"], [b"a\x00b"], [b"sub", b".."], [b"."]):
            request = DummyRequest(segments)
            from twisted.web.resource import getChildForRequest

            resource = getChildForRequest(root, request)
            rendered = resource.render(request)
            if isinstance(rendered, bytes):
                request.write(rendered)
            self.assertEqual(request.responseCode, 404, segments)
            self.assertNotIn(SECRET, body(request), segments)

    def test_dot_files(self) -> None:
        """Names starting with a dot are not served (.git, .env), except .well-known."""
        root = self.root()
        for path in ("/.git/config", "/.env", "/.git/", "/sub/.hidden"):
            self.assertEqual(get(root, path).responseCode, 404, path)
        self.assertEqual(body(get(root, "/.well-known/security.txt")), b"Contact: mailto:sec@example.com\n")

    def test_no_directory_listing(self) -> None:
        """A folder without index.html answers 404 (no listing) unless listings are asked for, which hide dot-files."""
        root = self.root()
        request = get(root, "/sub/")
        self.assertEqual(request.responseCode, 404)
        self.assertNotIn(b"note.txt", body(request))
        listing = body(get(self.root(static_listing=True), "/sub/"))
        self.assertIn(b"note.txt", listing)
        self.assertIn(b"deeper", listing)
        (self.site / "sub" / ".hidden").write_text("x")
        self.assertNotIn(b".hidden", body(get(self.root(static_listing=True), "/sub/")))

    def test_prefixes(self) -> None:
        """Folders at prefixes: the longest prefix wins, / keeps the status page when no folder is there."""
        other = self.tmp / "docs"
        other.mkdir()
        (other / "index.html").write_text("docs\n")
        (other / "sub").mkdir()
        (other / "sub" / "note.txt").write_text("the docs' note\n")
        root = self.root({"/app": self.site, "/app/docs": other})
        self.assertIn(b"<title>twisted-hub</title>", body(get(root, "/")))
        self.assertEqual(body(get(root, "/app/")), b"<!DOCTYPE html><title>my page</title>\n")
        self.assertEqual(body(get(root, "/app/sub/note.txt")), b"a note\n")
        self.assertEqual(body(get(root, "/app/docs/")), b"docs\n")
        self.assertEqual(body(get(root, "/app/docs/sub/note.txt")), b"the docs' note\n")
        self.assertEqual(get(root, "/app/docs/../../secret.txt").responseCode, 404)
        self.assertEqual(get(root, "/other.txt").responseCode, 404)
        self.assertEqual(get(root, "/app/docs").responseCode, 302)

    def test_hub_below_a_folder(self) -> None:
        """With the hub at /api/hub and a folder at /, the folder's api/ files are served beside the hub."""
        (self.site / "api").mkdir()
        (self.site / "api" / "doc.txt").write_text("api doc\n")
        root = self.root(path="/api/hub")
        self.assertEqual(body(get(root, "/api/doc.txt")), b"api doc\n")
        self.assertEqual(get(root, "/api/hub/chat").responseCode, 426)

    def test_without_status_page(self) -> None:
        """With no status page, / is the folder's index and /status a file like any other."""
        (self.site / "status").write_text("my status\n")
        root = self.root(status_page=False)
        self.assertEqual(body(get(root, "/status")), b"my status\n")
        self.assertIn(b"my page", body(get(root, "/")))

    def test_other_hubs(self) -> None:
        """Without the demo hubs, /demo is the folder's (the demo page is not served)."""
        (self.site / "demo").mkdir()
        (self.site / "demo" / "index.html").write_text("my demo\n")
        self.assertEqual(body(get(self.root(hubs=[RoomsHub]), "/demo/")), b"my demo\n")

    def test_host_check(self) -> None:
        """The static files answer only the allowed Host names (DNS rebinding): 400 for others."""
        root = self.root(allowed_hosts=["hub.example.com"])
        refused = get(root, "/index.html", {"Host": "evil.example"})
        self.assertEqual(refused.responseCode, 400)
        self.assertNotIn(b"my page", body(refused))
        self.assertIn(b"my page", body(get(root, "/index.html", {"Host": "hub.example.com:8080"})))

    def test_bad_arguments(self) -> None:
        """A missing folder, a file, a bad prefix, a prefix the hub owns, or files without listeners are refused."""
        for static, message in (
            (self.tmp / "nope", "does not exist"),
            (self.tmp / "secret.txt", "is not a folder"),
            ({"app": self.site}, "plain path"),
            ({"/a/../b": self.site}, "plain path"),
            ({"/client": self.site}, "'/client' would never be served"),
            ({"/hub/x": self.site}, "the hub serves '/hub'"),
            ({"/status.json": self.site}, "would never be served"),
            ({"/demo": self.site}, "would never be served"),
        ):
            with self.assertRaises(HubArgumentError) as raised:
                self.service(static)
            self.assertIn(message, str(raised.exception), static)
        with self.assertRaisesRegex(HubArgumentError, "both at '/'"):
            self.service(status_path="/")
        with self.assertRaisesRegex(HubArgumentError, "give listen= too"):
            HubService(list(DEMO_HUBS), static=self.site)

    def test_metrics_path_is_the_hubs(self) -> None:
        """With metrics on, /metrics is reserved too; without, a folder may serve it."""
        with self.assertRaisesRegex(HubArgumentError, "'/metrics'"):
            self.service({"/metrics": self.site}, metrics=True)
        self.assertIn(b"my page", body(get(self.root({"/metrics": self.site}), "/metrics/")))


class TwistdStaticOptionTests(Folder):
    def options(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_forms(self) -> None:
        """--static DIR serves at /, --static /app=DIR at /app (repeatable); paths become absolute."""
        self.assertEqual(parse_static_option("site"), ("/", "site"))
        self.assertEqual(parse_static_option("/app=build"), ("/app", "build"))
        self.assertEqual(parse_static_option("/srv/www"), ("/", "/srv/www"))
        self.assertEqual(parse_static_option("/=/srv/a=b"), ("/", "/srv/a=b"))
        self.assertEqual(parse_static_option("a=b"), ("/", "a=b"))
        options = self.options("--static", str(self.site), "--static", f"/app/={self.site / 'sub'}")
        self.assertEqual(options["static"], [("/app", str(self.site / "sub")), ("/", str(self.site))])
        self.assertEqual(options["status-path"], "/status")
        self.assertEqual(self.options("--static", f"/app={self.site}")["status-path"], "/")
        self.assertEqual(self.options("--static", str(self.site), "--status-path", "/ops")["status-path"], "/ops")
        self.assertEqual(self.options()["static"], [])

    def test_bad_values_are_usage_errors(self) -> None:
        """Bad --static values stop twistd with a usage error naming the option."""
        for argv, message in (
            (["--static", str(self.tmp / "nope")], "does not exist"),
            (["--static", f"/client={self.site}"], "would never be served"),
            (["--static", f"/x={self.site}", "--static", f"/x/={self.site}"], "two folders at '/x'"),
            (["--static", str(self.site), "--status-path", "/"], "both at '/'"),
            (["--static", f"/api/hub/x={self.site}", "--path", "/api/hub"], "the hub serves '/api/hub'"),
        ):
            with self.assertRaises(usage.UsageError) as raised:
                self.options(*argv)
            self.assertIn("--static", str(raised.exception))
            self.assertIn(message, str(raised.exception))

    def test_config_file(self) -> None:
        """The TOML file takes static = [...] and static-listing = true; the command line's --static replaces the list."""
        config = self.tmp / "hub.toml"
        config.write_text(f'static = ["{self.site}", "/docs={self.site / "sub"}"]\nstatic-listing = true\n')
        options = self.options("--config", str(config))
        self.assertEqual(options["static"], [("/docs", str(self.site / "sub")), ("/", str(self.site))])
        self.assertTrue(options["static-listing"])
        self.assertEqual(self.options("--config", str(config), "--static", f"/x={self.site}")["static"], [("/x", str(self.site))])

    def test_make_service(self) -> None:
        """makeService hands the folders and the listing flag to HubService."""
        options = self.options("--static", str(self.site), "--static-listing", "--listen", "tcp:0:interface=127.0.0.1")
        (service,) = list(makeService(options))  # type: ignore[call-overload]
        self.assertEqual(service.static, [("/", str(self.site))])
        self.assertIn(b"note.txt", body(get(service.site.resource, "/sub/")))
        self.assertIn(b"<title>twisted-hub</title>", body(get(service.site.resource, "/status")))


def raw_get(port: int, target: str) -> tuple[int, bytes]:
    """GET an exact request target (no client-side clean-up of ..) over loopback; the status and the body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(f"GET {target} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    response = b"".join(chunks)
    head, _, content = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), content


@pytest_twisted.ensureDeferred
async def test_twistd_serves_the_folder_and_nothing_outside_it(tmp_path: Path) -> None:
    """A real `twistd hub --static DIR` serves the page and refuses every .. and %2e%2e / %2f way out of the folder."""
    from twisted.internet import reactor
    from twisted.internet.threads import deferToThread

    site = make_site(tmp_path)
    child = spawn_python(reactor, *TWISTD, "-n", "--pidfile=", "--logfile=-", "hub",
                         "--listen", "tcp:0:interface=127.0.0.1", "--static", str(site))
    try:
        port = await started_port(child, reactor)
        status, content = await deferToThread(raw_get, port, "/")
        assert (status, content) == (200, b"<!DOCTYPE html><title>my page</title>\n")
        for target in ("/../secret.txt", "/%2e%2e/secret.txt", "/..%2fsecret.txt", "/%2e%2e%2fsecret.txt",
                       "/sub/..%2f..%2fsecret.txt", "/sub/%2e%2e/%2e%2e/secret.txt", "/%2E%2E/secret.txt",
                       "/..%5csecret.txt", "/.env", "/.git/config", "/sub/"):
            status, content = await deferToThread(raw_get, port, target)
            assert status == 404, target
            assert SECRET not in content and b"PASSWORD" not in content, target
        status, content = await deferToThread(raw_get, port, "/status")
        assert status == 200 and b"<title>twisted-hub</title>" in content
        assert any(f"serving the files of {site} at /" in line for line in child.lines), child.output()
    finally:
        await child.stop(reactor)
