"""
Mount a hub endpoint on an existing C{twisted.web} site.

    root.putChild(b"hub", HubResource(HubServerFactory([ChatHub])))

Every path below the mount point reaches the factory, whose last segment
names the hub (C{/hub/chat}).
"""

from __future__ import annotations

from autobahn.twisted.resource import WebSocketResource
from twisted.web.resource import IResource
from zope.interface import implementer

from ._server import HubServerFactory


@implementer(IResource)
class HubResource(WebSocketResource):  # type: ignore[misc]
    """A C{twisted.web} resource that upgrades requests to hub connections."""

    def __init__(self, factory: HubServerFactory) -> None:
        super().__init__(factory)
        self.factory = factory
