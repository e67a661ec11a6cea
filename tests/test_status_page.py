"""
The status page of HubService / twistd hub shows what a visitor may see
(schemes and ports, never file names), can be turned off or moved, and obeys
the allowed-hosts list.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import IResource
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from twisted_hub import HubService
from twisted_hub._twisted.resource import check_status_path, public_listen_text
from twisted_hub.demo import EchoHub

from ._certs import write_self_signed


def get(service: HubService, path: str, host: str = "hub.example.com") -> tuple[int, str]:
    """GET C{path} from the service's site: (status, body)."""
    assert service.site is not None
    segments = [s.encode() for s in path.lstrip("/").split("/")]
    request = DummyRequest(segments)
    request.requestHeaders.setRawHeaders(b"host", [host.encode()])
    resource = service.site.getResourceFor(request)  # type: ignore[no-untyped-call]
    body = IResource(resource).render(request)
    assert body is not NOT_DONE_YET
    return request.responseCode or 200, body.decode("utf-8")


class StatusPageTests(SynchronousTestCase):
    def service(self, listen: list[str], **options: Any) -> HubService:
        return HubService([EchoHub], listen, clock=MemoryReactorClock(), **options)

    def test_no_file_paths_on_the_page(self) -> None:
        """The page names schemes and ports; the key and certificate paths and the socket path never appear."""
        with tempfile.TemporaryDirectory() as directory:
            key, cert = write_self_signed(Path(directory))
            listen = [
                "tcp:8080:interface=127.0.0.1",
                f"ssl:8443:privateKey={key}:certKey={cert}",
                f"unix:{directory}/hub.sock",
            ]
            status, page = get(self.service(listen), "/")
        self.assertEqual(status, 200)
        self.assertIn("ws, port 8080, wss, port 8443, a local (unix) socket", page)
        for secret in (str(key), str(cert), directory, "privateKey", "127.0.0.1"):
            self.assertNotIn(secret, page)

    def test_public_listen_text(self) -> None:
        """Each kind of listen description is reduced to what a visitor may see."""
        cases = {
            "tcp:8080": "ws, port 8080",
            "8080": "ws, port 8080",
            "tcp6:9000:interface=\\:\\:1": "ws, port 9000",
            "ssl:443:privateKey=/etc/k.pem": "wss, port 443",
            "unix:/run/hub.sock:mode=660": "a local (unix) socket",
            "systemd:domain=INET:index=0": "another endpoint",
        }
        self.assertEqual({d: public_listen_text(d) for d in cases}, cases)

    def test_off_is_404(self) -> None:
        """status_page=False (--no-status): GET / is 404 and the hub endpoint still answers."""
        service = self.service(["tcp:8080"], status_page=False)
        self.assertEqual(get(service, "/")[0], 404)
        self.assertEqual(get(service, "/hub/echo")[0], 426)

    def test_moved(self) -> None:
        """status_path moves the page: served there, 404 at /."""
        service = self.service(["tcp:8080"], status_path="/status")
        status, page = get(service, "/status")
        self.assertEqual(status, 200)
        self.assertIn("twisted-hub", page)
        self.assertEqual(get(service, "/")[0], 404)
        self.assertEqual(get(service, "/hub/echo")[0], 426)

    def test_moved_below_a_shared_prefix(self) -> None:
        """The page and the hub endpoint may share a parent path (/api/status next to /api/hub)."""
        service = self.service(["tcp:8080"], path="/api/hub", status_path="/api/status")
        self.assertEqual(get(service, "/api/status")[0], 200)
        self.assertEqual(get(service, "/api/hub/echo")[0], 426)

    def test_bad_status_paths(self) -> None:
        """A status path on, above or below the hub path, or not a plain path, is a ValueError."""
        for bad in ("/hub", "/hub/status", "status", "/a?b", "/a//b"):
            with self.assertRaises(ValueError):
                check_status_path("/hub", bad)
        with self.assertRaises(ValueError):
            check_status_path("/api/hub", "/api")
        self.assertEqual(check_status_path("/hub", "/status/"), "/status")

    def test_allowed_hosts_apply_to_the_page(self) -> None:
        """With allowed_hosts, the page answers 400 to another Host (a DNS-rebinding page cannot read it)."""
        service = self.service(["tcp:8080"], allowed_hosts=["hub.example.com"])
        self.assertEqual(get(service, "/")[0], 200)
        self.assertEqual(get(service, "/", host="evil.example")[0], 400)
