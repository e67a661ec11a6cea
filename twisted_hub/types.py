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

from ._backplane import Backplane, LocalBackplane
from ._client import HubClientFactory, HubClientProtocol
from ._client_common import ClientHeartbeatEvent, HubProxy, ServerHeartbeatEvent
from ._errors import DisconnectReason
from ._heartbeat import ClockOffset, MetadataProvider
from ._hub import ConnectionContext, HeartbeatFeature
from ._limits import ConnectionLimits
from ._origin import AllowedHosts
from ._server import HubServerProtocol
from ._wire import SUBPROTOCOL

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
