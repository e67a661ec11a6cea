"""
Types you receive from twisted-hub, or annotate with, but do not build
yourself: the connection objects the factories make, the events handed to
your callbacks, the backplane interface, the subprotocol name.

For annotations (C{def on_timeout(reason: DisconnectReason) -> None}) and
C{isinstance} checks.  Everything you construct or catch is in
C{twisted_hub} itself (docs/api.md).  Importing this module loads the
Twisted client and server; from asyncio code, import it under
C{if TYPE_CHECKING:}.
"""

from ._backplane.interface import Backplane, LocalBackplane
from ._core.client_common import ClientHeartbeatEvent, HubProxy, ServerHeartbeatEvent
from ._core.errors import DisconnectReason
from ._core.heartbeat import ClockOffset, MetadataProvider
from ._core.origin import AllowedHosts
from ._core.wire import SUBPROTOCOL
from ._hubs.hub import ConnectionContext, HeartbeatFeature
from ._twisted.client import HubClientFactory, HubClientProtocol
from ._twisted.limits import ConnectionLimits
from ._twisted.server import HubServerProtocol

__all__ = [
    "AllowedHosts",
    "Backplane",
    "ClientHeartbeatEvent",
    "ClockOffset",
    "ConnectionContext",
    "ConnectionLimits",
    "DisconnectReason",
    "HeartbeatFeature",
    "HubClientFactory",
    "HubClientProtocol",
    "HubProxy",
    "HubServerProtocol",
    "LocalBackplane",
    "MetadataProvider",
    "SUBPROTOCOL",
    "ServerHeartbeatEvent",
]
