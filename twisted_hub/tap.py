"""
C{twistd hub}: serve hubs over WebSocket.

    twistd -n hub --port 8080
    twistd -n hub --listen tcp:8080:interface=127.0.0.1 --hub myapp.hubs:ChatHub
"""

from __future__ import annotations

import importlib
from typing import Any

from twisted.application import strports
from twisted.application.service import IService, MultiService
from twisted.python import usage

from ._heartbeat import HeartbeatConfigurationError, HeartbeatPolicy
from ._hub import Hub


def load_hub(spec: str) -> type[Hub]:
    """Import C{module:Class} and check it is a hub class."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise usage.UsageError(f"--hub wants module:Class, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise usage.UsageError(f"--hub {spec}: cannot import {module_name!r}: {e}") from None
    hub_class = getattr(module, attribute, None)
    if not (isinstance(hub_class, type) and issubclass(hub_class, Hub)):
        raise usage.UsageError(f"--hub {spec}: {attribute!r} is not a Hub subclass in {module_name!r}")
    return hub_class


def _positive(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise usage.UsageError(f"--{name} must be a number, got {value!r}") from None
    if not number > 0:
        raise usage.UsageError(f"--{name} must be > 0, got {value!r}")
    return number


class Options(usage.Options):
    """Command-line options of C{twistd hub}."""

    synopsis = "[options]"
    longdesc = "Serve twisted-hub hubs over WebSocket (subprotocol twisted-hub.v1)."

    optParameters = [
        ["port", "p", None, "TCP port to listen on (shorthand for --listen tcp:PORT)."],
        ["path", None, "/hub", "URL path of the WebSocket endpoint; hubs are at PATH/<hub name>."],
        ["heartbeat-interval", None, None, "Server heartbeat interval in seconds (turns heartbeats on)."],
        ["heartbeat-timeout", None, None, "Server heartbeat timeout in seconds (default 3 x interval; 'none' never)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["hubs"] = []

    def opt_listen(self, description: str) -> None:
        """Listen on a strports endpoint description (repeatable), e.g. tcp:8080."""
        self["listen"].append(description)

    def opt_hub(self, spec: str) -> None:
        """Serve the hub class module:Class (repeatable; default: the demo hubs)."""
        self["hubs"].append(load_hub(spec))

    def postOptions(self) -> None:
        port = self["port"]
        if port is not None:
            if not port.isdigit() or not 0 <= int(port) <= 65535:
                raise usage.UsageError(f"--port must be a TCP port number, got {port!r}")
            self["listen"].append(f"tcp:{port}")
        if not self["listen"]:
            self["listen"].append("tcp:8080")
        if not self["path"].startswith("/"):
            raise usage.UsageError(f"--path must start with '/', got {self['path']!r}")
        interval = self["heartbeat-interval"]
        timeout = self["heartbeat-timeout"]
        if interval is None and timeout is not None:
            raise usage.UsageError("--heartbeat-timeout needs --heartbeat-interval")
        policy = HeartbeatPolicy()
        if interval is not None:
            seconds = _positive("heartbeat-interval", interval)
            try:
                if timeout is None:
                    policy = HeartbeatPolicy.every(seconds)
                elif timeout.lower() == "none":
                    policy = HeartbeatPolicy.every(seconds, None)
                else:
                    policy = HeartbeatPolicy.every(seconds, _positive("heartbeat-timeout", timeout))
            except HeartbeatConfigurationError as e:
                raise usage.UsageError(str(e)) from None
        self["heartbeat"] = policy
        if not self["hubs"]:
            from .demo import DEMO_HUBS

            self["hubs"] = list(DEMO_HUBS)


def makeService(options: Options) -> IService:
    """Build the service tree for C{twistd hub}."""
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    from ._resource import HubResource
    from ._server import HubServerFactory

    factory = HubServerFactory(options["hubs"], heartbeat=options["heartbeat"])
    root = Resource()
    node: Any = root
    segments = [s.encode() for s in options["path"].strip("/").split("/") if s]
    for segment in segments[:-1]:
        child = Resource()
        node.putChild(segment, child)
        node = child
    hub_resource = HubResource(factory)
    if segments:
        node.putChild(segments[-1], hub_resource)
    site = Site(root)
    service = MultiService()
    for description in options["listen"]:
        strports.service(description, site).setServiceParent(service)
    return service
