"""
twisted-hub: typed RPC hubs over WebSocket + msgpack for Twisted, with
application-level heartbeats in both directions.

The public API is re-exported here (docs/api.md); implementation modules
are private.  More public modules: C{twisted_hub.auth} (authentication and
authorization), C{twisted_hub.filters} (code around hub calls),
C{twisted_hub.types} (types you receive or annotate with), C{twisted_hub.testing},
C{twisted_hub.aio}, C{twisted_hub.redis}.

Importing the package imports nothing else (PEP 562): each name loads its
module when first used, so C{import twisted_hub.aio} does not load the
Twisted server side.  Names that moved elsewhere still work from here, with
a C{DeprecationWarning} naming their new spelling
(C{twisted_hub._deprecate.MOVED_NAMES}).
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING

__version__ = "0.1.0"

#: every public name (but C{__version__}): the private module defining it
_EXPORTS: dict[str, str] = {
    "CallTimeoutError": "_errors",
    "ClientMetrics": "_metrics",
    "ClientScriptResource": "_static",
    "CloseCode": "_wire",
    "CompressionPolicy": "_compression_policy",
    "ConnectTimeoutError": "_errors",
    "ConnectionClosedError": "_errors",
    "ConnectionGuard": "_limits",
    "DisconnectKind": "_errors",
    "ErrorCode": "_wire",
    "HandshakeError": "_errors",
    "HeartbeatConfigurationError": "_heartbeat",
    "HeartbeatConfigurationWarning": "_heartbeat",
    "HeartbeatPolicy": "_heartbeat",
    "Hub": "_hub",
    "HubArgumentError": "_base_error",
    "HubClientOptions": "_client_common",
    "HubError": "_errors",
    "HubMetrics": "_metrics",
    "HubResource": "_resource",
    "HubServerFactory": "_server",
    "HubService": "_service",
    "HubStateError": "_base_error",
    "HubUsageError": "_base_error",
    "InvalidArguments": "_hub",
    "OriginPolicy": "_origin",
    "ProtocolError": "_wire",
    "ReconnectingHubClient": "_reconnect",
    "RefuseConnection": "_hub",
    "TwistedHubError": "_base_error",
    "connect": "_client",
    "full_jitter_policy": "_client_common",
    "heartbeat": "_hub",
    "hub": "_hub",
    "method": "_hub",
    "set_log_level": "_logging",
}

__all__ = [
    "CallTimeoutError",
    "ClientMetrics",
    "ClientScriptResource",
    "CloseCode",
    "CompressionPolicy",
    "ConnectTimeoutError",
    "ConnectionClosedError",
    "ConnectionGuard",
    "DisconnectKind",
    "ErrorCode",
    "HandshakeError",
    "HeartbeatConfigurationError",
    "HeartbeatConfigurationWarning",
    "HeartbeatPolicy",
    "Hub",
    "HubArgumentError",
    "HubClientOptions",
    "HubError",
    "HubMetrics",
    "HubResource",
    "HubServerFactory",
    "HubService",
    "HubStateError",
    "HubUsageError",
    "InvalidArguments",
    "OriginPolicy",
    "ProtocolError",
    "ReconnectingHubClient",
    "RefuseConnection",
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
    from ._base_error import HubArgumentError as HubArgumentError
    from ._base_error import HubStateError as HubStateError
    from ._base_error import HubUsageError as HubUsageError
    from ._base_error import TwistedHubError as TwistedHubError
    from ._client import connect as connect
    from ._client_common import HubClientOptions as HubClientOptions
    from ._client_common import full_jitter_policy as full_jitter_policy
    from ._compression_policy import CompressionPolicy as CompressionPolicy
    from ._errors import CallTimeoutError as CallTimeoutError
    from ._errors import ConnectionClosedError as ConnectionClosedError
    from ._errors import ConnectTimeoutError as ConnectTimeoutError
    from ._errors import DisconnectKind as DisconnectKind
    from ._errors import HandshakeError as HandshakeError
    from ._errors import HubError as HubError
    from ._heartbeat import HeartbeatConfigurationError as HeartbeatConfigurationError
    from ._heartbeat import HeartbeatConfigurationWarning as HeartbeatConfigurationWarning
    from ._heartbeat import HeartbeatPolicy as HeartbeatPolicy
    from ._hub import Hub as Hub
    from ._hub import InvalidArguments as InvalidArguments
    from ._hub import RefuseConnection as RefuseConnection
    from ._hub import heartbeat as heartbeat
    from ._hub import hub as hub
    from ._hub import method as method
    from ._limits import ConnectionGuard as ConnectionGuard
    from ._logging import set_log_level as set_log_level
    from ._metrics import ClientMetrics as ClientMetrics
    from ._metrics import HubMetrics as HubMetrics
    from ._origin import OriginPolicy as OriginPolicy
    from ._reconnect import ReconnectingHubClient as ReconnectingHubClient
    from ._resource import HubResource as HubResource
    from ._server import HubServerFactory as HubServerFactory
    from ._service import HubService as HubService
    from ._static import ClientScriptResource as ClientScriptResource
    from ._wire import CloseCode as CloseCode
    from ._wire import ErrorCode as ErrorCode
    from ._wire import ProtocolError as ProtocolError

if TYPE_CHECKING:
    # Deprecated here (a DeprecationWarning at run time names the new spelling);
    # declared so that code using them still type-checks until they go.
    from ._auth import AuthenticationFailed as AuthenticationFailed
    from ._auth import Credentials as Credentials
    from ._auth import Forbidden as Forbidden
    from ._auth import JWTAuthenticator as JWTAuthenticator
    from ._auth import User as User
    from ._auth import anyone as anyone
    from ._auth import authenticated as authenticated
    from ._auth import has_claim as has_claim
    from ._auth import redacting_log_formatter as redacting_log_formatter
    from ._backplane import Backplane as Backplane
    from ._backplane import LocalBackplane as LocalBackplane
    from ._client import HubClientFactory as HubClientFactory
    from ._client import HubClientProtocol as HubClientProtocol
    from ._client_common import ClientHeartbeatEvent as ClientHeartbeatEvent
    from ._client_common import HubProxy as HubProxy
    from ._client_common import ServerHeartbeatEvent as ServerHeartbeatEvent
    from ._errors import DisconnectReason as DisconnectReason
    from ._filters import CallLog as CallLog
    from ._filters import CallTimeout as CallTimeout
    from ._filters import ConnectionEvent as ConnectionEvent
    from ._filters import HubCall as HubCall
    from ._filters import HubFilter as HubFilter
    from ._filters import RateLimit as RateLimit
    from ._heartbeat import ClockOffset as ClockOffset
    from ._heartbeat import MetadataProvider as MetadataProvider
    from ._hub import ConnectionContext as ConnectionContext
    from ._hub import HeartbeatFeature as HeartbeatFeature
    from ._limits import ConnectionLimits as ConnectionLimits
    from ._origin import AllowedHosts as AllowedHosts
    from ._server import HubServerProtocol as HubServerProtocol
    from ._wire import SUBPROTOCOL as SUBPROTOCOL

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
        from ._deprecate import moved_name

        # "from twisted_hub import NAME" asks twice: the import system's
        # hasattr() (in _handle_fromlist), then the import itself.  Warn once,
        # at the second, which points at the importing line.
        return moved_name(name, warn=sys._getframe(1).f_code.co_name != "_handle_fromlist")

    def __dir__() -> list[str]:
        """The public names, loaded or not, and the module's own attributes (not the deprecated names)."""
        return sorted(set(globals()) | set(__all__))
