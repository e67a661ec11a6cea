"""
twisted-hub: typed RPC hubs over WebSocket + msgpack for Twisted, with
application-level heartbeats in both directions.

The public API is re-exported here (docs/api.md); implementation modules
are private.  More public modules: C{twisted_hub.auth} (authentication and
authorization), C{twisted_hub.filters} (code around hub calls),
C{twisted_hub.types} (types you receive, annotate with or filter on),
C{twisted_hub.metrics} (the Prometheus metrics), C{twisted_hub.testing},
C{twisted_hub.aio}, C{twisted_hub.redis}.

Importing the package imports nothing else (PEP 562): each name loads its
module when first used, so C{import twisted_hub.aio} does not load the
Twisted server side.  Names that moved elsewhere still work from here, with
a C{DeprecationWarning} naming their new spelling
(C{twisted_hub._core.deprecate.MOVED_NAMES}).
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING

__version__ = "0.1.0"

#: every public name (but C{__version__}): the private module defining it
_EXPORTS: dict[str, str] = {
    "CallTimeoutError": "_core.errors",
    "ClientScriptResource": "_ops.static",
    "CompressionPolicy": "_core.compression_policy",
    "ConnectTimeoutError": "_core.errors",
    "ConnectionClosedError": "_core.errors",
    "ConnectionGuard": "_twisted.limits",
    "DisconnectKind": "_core.errors",
    "ErrorCode": "_core.wire",
    "HandshakeError": "_core.errors",
    "HeartbeatConfigurationError": "_core.heartbeat",
    "HeartbeatPolicy": "_core.heartbeat",
    "Hub": "_hubs.hub",
    "HubArgumentError": "_core.base_error",
    "HubClientOptions": "_core.client_common",
    "HubError": "_core.errors",
    "HubResource": "_twisted.resource",
    "HubServerFactory": "_twisted.server",
    "HubService": "_ops.service",
    "HubStateError": "_core.base_error",
    "HubUsageError": "_core.base_error",
    "InvalidArguments": "_hubs.hub",
    "ProtocolError": "_core.wire",
    "ReconnectingHubClient": "_twisted.reconnect",
    "RefuseConnection": "_hubs.hub",
    "ResumePolicy": "_core.resume",
    "TwistedHubError": "_core.base_error",
    "connect": "_twisted.client",
    "full_jitter_policy": "_core.client_common",
    "heartbeat": "_hubs.hub",
    "hub": "_hubs.hub",
    "method": "_hubs.hub",
    "set_log_level": "_support.logging",
}

__all__ = [
    "CallTimeoutError",
    "ClientScriptResource",
    "CompressionPolicy",
    "ConnectTimeoutError",
    "ConnectionClosedError",
    "ConnectionGuard",
    "DisconnectKind",
    "ErrorCode",
    "HandshakeError",
    "HeartbeatConfigurationError",
    "HeartbeatPolicy",
    "Hub",
    "HubArgumentError",
    "HubClientOptions",
    "HubError",
    "HubResource",
    "HubServerFactory",
    "HubService",
    "HubStateError",
    "HubUsageError",
    "InvalidArguments",
    "ProtocolError",
    "ReconnectingHubClient",
    "RefuseConnection",
    "ResumePolicy",
    "TwistedHubError",
    "__version__",
    "connect",
    "full_jitter_policy",
    "heartbeat",
    "hub",
    "method",
    "set_log_level",
]

if TYPE_CHECKING:
    from ._core.base_error import HubArgumentError as HubArgumentError
    from ._core.base_error import HubStateError as HubStateError
    from ._core.base_error import HubUsageError as HubUsageError
    from ._core.base_error import TwistedHubError as TwistedHubError
    from ._core.client_common import HubClientOptions as HubClientOptions
    from ._core.client_common import full_jitter_policy as full_jitter_policy
    from ._core.compression_policy import CompressionPolicy as CompressionPolicy
    from ._core.errors import CallTimeoutError as CallTimeoutError
    from ._core.errors import ConnectionClosedError as ConnectionClosedError
    from ._core.errors import ConnectTimeoutError as ConnectTimeoutError
    from ._core.errors import DisconnectKind as DisconnectKind
    from ._core.errors import HandshakeError as HandshakeError
    from ._core.errors import HubError as HubError
    from ._core.heartbeat import HeartbeatConfigurationError as HeartbeatConfigurationError
    from ._core.heartbeat import HeartbeatPolicy as HeartbeatPolicy
    from ._core.resume import ResumePolicy as ResumePolicy
    from ._core.wire import ErrorCode as ErrorCode
    from ._core.wire import ProtocolError as ProtocolError
    from ._hubs.hub import Hub as Hub
    from ._hubs.hub import InvalidArguments as InvalidArguments
    from ._hubs.hub import RefuseConnection as RefuseConnection
    from ._hubs.hub import heartbeat as heartbeat
    from ._hubs.hub import hub as hub
    from ._hubs.hub import method as method
    from ._ops.service import HubService as HubService
    from ._ops.static import ClientScriptResource as ClientScriptResource
    from ._support.logging import set_log_level as set_log_level
    from ._twisted.client import connect as connect
    from ._twisted.limits import ConnectionGuard as ConnectionGuard
    from ._twisted.reconnect import ReconnectingHubClient as ReconnectingHubClient
    from ._twisted.resource import HubResource as HubResource
    from ._twisted.server import HubServerFactory as HubServerFactory

if TYPE_CHECKING:
    # Deprecated here (a DeprecationWarning at run time names the new spelling);
    # declared so that code using them still type-checks until they go.
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
    from ._hubs.auth import AuthenticationFailed as AuthenticationFailed
    from ._hubs.auth import Credentials as Credentials
    from ._hubs.auth import Forbidden as Forbidden
    from ._hubs.auth import JWTAuthenticator as JWTAuthenticator
    from ._hubs.auth import User as User
    from ._hubs.auth import anyone as anyone
    from ._hubs.auth import authenticated as authenticated
    from ._hubs.auth import has_claim as has_claim
    from ._hubs.auth import redacting_log_formatter as redacting_log_formatter
    from ._hubs.filters import CallLog as CallLog
    from ._hubs.filters import CallTimeout as CallTimeout
    from ._hubs.filters import ConnectionEvent as ConnectionEvent
    from ._hubs.filters import HubCall as HubCall
    from ._hubs.filters import HubFilter as HubFilter
    from ._hubs.filters import RateLimit as RateLimit
    from ._hubs.hub import ConnectionContext as ConnectionContext
    from ._hubs.hub import HeartbeatFeature as HeartbeatFeature
    from ._metrics.prometheus import ClientMetrics as ClientMetrics
    from ._metrics.prometheus import HubMetrics as HubMetrics
    from ._twisted.client import HubClientFactory as HubClientFactory
    from ._twisted.client import HubClientProtocol as HubClientProtocol
    from ._twisted.limits import ConnectionLimits as ConnectionLimits
    from ._twisted.server import HubServerProtocol as HubServerProtocol

    PROXY_SAFE: HeartbeatPolicy
    FAST_DETECTION: HeartbeatPolicy
    MOBILE: HeartbeatPolicy
else:

    def __getattr__(name: str) -> object:
        """Load a public name from its module on first use (then it is a plain global)."""
        module = _EXPORTS.get(name)
        if module is not None:
            value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
            globals()[name] = value
            return value
        if name.startswith("__"):
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        from ._core.deprecate import moved_name

        # "from twisted_hub import NAME" asks twice: the import system's
        # hasattr() (in _handle_fromlist), then the import itself.  Warn once,
        # at the second, which points at the importing line.
        return moved_name(name, warn=sys._getframe(1).f_code.co_name != "_handle_fromlist")

    def __dir__() -> list[str]:
        """The public names, loaded or not, and the module's own attributes (not the deprecated names)."""
        return sorted(set(globals()) | set(__all__))
