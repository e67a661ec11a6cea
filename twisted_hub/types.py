"""
Types you receive from twisted-hub, annotate with or filter on, but do not
build yourself: the connection objects the factories make, the events and
disconnect reasons handed to your callbacks with their close codes
(L{CloseCode}), the origin check the server builds from C{allowed_origins}
(L{OriginPolicy}), the warning a risky heartbeat configuration raises
(L{HeartbeatConfigurationWarning}, for C{warnings.filterwarnings}), the
backplane interface, the subprotocol name.

For annotations (C{def on_timeout(reason: DisconnectReason) -> None}),
comparisons (C{reason.code == CloseCode.SESSION_MOVED}), C{isinstance}
checks and warning filters.  Everything you construct or catch is in
C{twisted_hub} itself (docs/api.md).

Importing this module imports nothing else (PEP 562, as the package does):
each name loads its module when first used.  C{CloseCode},
C{DisconnectReason}, C{OriginPolicy} and the other names of the sans-IO core
load no Twisted, so asyncio code uses them freely; the Twisted connection
types (C{HubServerProtocol}, C{HubClientProtocol}, ...) load the Twisted
client or server: from asyncio code, name those under C{if TYPE_CHECKING:}.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

#: every name of this module: the private module defining it
_EXPORTS: dict[str, str] = {
    "AllowedHosts": "_core.origin",
    "Backplane": "_backplane.interface",
    "ClientHeartbeatEvent": "_core.client_common",
    "ClockOffset": "_core.heartbeat",
    "CloseCode": "_core.wire",
    "ConnectionContext": "_hubs.hub",
    "ConnectionLimits": "_twisted.limits",
    "DisconnectReason": "_core.errors",
    "HeartbeatConfigurationWarning": "_core.heartbeat",
    "HeartbeatFeature": "_hubs.hub",
    "HubClientFactory": "_twisted.client",
    "HubClientProtocol": "_twisted.client",
    "HubProxy": "_core.client_common",
    "HubServerProtocol": "_twisted.server",
    "LocalBackplane": "_backplane.interface",
    "MetadataProvider": "_core.heartbeat",
    "OriginPolicy": "_core.origin",
    "SUBPROTOCOL": "_core.wire",
    "ServerHeartbeatEvent": "_core.client_common",
}

__all__ = [
    "AllowedHosts",
    "Backplane",
    "ClientHeartbeatEvent",
    "ClockOffset",
    "CloseCode",
    "ConnectionContext",
    "ConnectionLimits",
    "DisconnectReason",
    "HeartbeatConfigurationWarning",
    "HeartbeatFeature",
    "HubClientFactory",
    "HubClientProtocol",
    "HubProxy",
    "HubServerProtocol",
    "LocalBackplane",
    "MetadataProvider",
    "OriginPolicy",
    "SUBPROTOCOL",
    "ServerHeartbeatEvent",
]

if TYPE_CHECKING:
    from ._backplane.interface import Backplane as Backplane
    from ._backplane.interface import LocalBackplane as LocalBackplane
    from ._core.client_common import ClientHeartbeatEvent as ClientHeartbeatEvent
    from ._core.client_common import HubProxy as HubProxy
    from ._core.client_common import ServerHeartbeatEvent as ServerHeartbeatEvent
    from ._core.errors import DisconnectReason as DisconnectReason
    from ._core.heartbeat import ClockOffset as ClockOffset
    from ._core.heartbeat import HeartbeatConfigurationWarning as HeartbeatConfigurationWarning
    from ._core.heartbeat import MetadataProvider as MetadataProvider
    from ._core.origin import AllowedHosts as AllowedHosts
    from ._core.origin import OriginPolicy as OriginPolicy
    from ._core.wire import SUBPROTOCOL as SUBPROTOCOL
    from ._core.wire import CloseCode as CloseCode
    from ._hubs.hub import ConnectionContext as ConnectionContext
    from ._hubs.hub import HeartbeatFeature as HeartbeatFeature
    from ._twisted.client import HubClientFactory as HubClientFactory
    from ._twisted.client import HubClientProtocol as HubClientProtocol
    from ._twisted.limits import ConnectionLimits as ConnectionLimits
    from ._twisted.server import HubServerProtocol as HubServerProtocol
else:

    def __getattr__(name: str) -> object:
        """Load a name from its module on first use (then it is a plain global)."""
        module = _EXPORTS.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"twisted_hub.{module}"), name)
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        """The names, loaded or not, and the module's own attributes."""
        return sorted(set(globals()) | set(__all__))
