"""
twisted-hub: typed RPC hubs over WebSocket + msgpack for Twisted, with
application-level heartbeats in both directions.

The public API is re-exported here; implementation modules are private.
"""

from ._auth import (
    AuthenticationFailed,
    Credentials,
    Forbidden,
    JWTAuthenticator,
    User,
    anyone,
    authenticated,
    has_claim,
    redacting_log_formatter,
)
from ._backplane import Backplane, LocalBackplane
from ._base_error import HubArgumentError, HubStateError, HubUsageError, TwistedHubError
from ._client import (
    ClientHeartbeatEvent,
    HubClientFactory,
    HubClientOptions,
    HubClientProtocol,
    HubProxy,
    ServerHeartbeatEvent,
    connect,
)
from ._compression import CompressionPolicy
from ._errors import (
    CallTimeoutError,
    ConnectionClosedError,
    ConnectTimeoutError,
    DisconnectKind,
    DisconnectReason,
    HandshakeError,
    HubError,
)
from ._filters import CallLog, CallTimeout, ConnectionEvent, HubCall, HubFilter, RateLimit
from ._heartbeat import (
    FAST_DETECTION,
    MOBILE,
    PROXY_SAFE,
    ClockOffset,
    HeartbeatConfigurationError,
    HeartbeatConfigurationWarning,
    HeartbeatPolicy,
    MetadataProvider,
)
from ._hub import ConnectionContext, HeartbeatFeature, Hub, InvalidArguments, RefuseConnection, heartbeat, hub, method
from ._limits import ConnectionGuard, ConnectionLimits
from ._logging import set_log_level
from ._metrics import ClientMetrics, HubMetrics
from ._origin import AllowedHosts, OriginPolicy
from ._reconnect import ReconnectingHubClient, full_jitter_policy
from ._resource import HubResource
from ._server import HubServerFactory, HubServerProtocol
from ._service import HubService
from ._static import ClientScriptResource
from ._wire import SUBPROTOCOL, CloseCode, ErrorCode, ProtocolError

__version__ = "0.1.0"

__all__ = [
    "AllowedHosts",
    "AuthenticationFailed",
    "Backplane",
    "CallLog",
    "CallTimeout",
    "CallTimeoutError",
    "ClientHeartbeatEvent",
    "ClientMetrics",
    "ClientScriptResource",
    "ClockOffset",
    "CloseCode",
    "CompressionPolicy",
    "ConnectTimeoutError",
    "ConnectionClosedError",
    "ConnectionContext",
    "ConnectionEvent",
    "ConnectionGuard",
    "ConnectionLimits",
    "Credentials",
    "DisconnectKind",
    "DisconnectReason",
    "ErrorCode",
    "FAST_DETECTION",
    "Forbidden",
    "HandshakeError",
    "HeartbeatConfigurationError",
    "HeartbeatConfigurationWarning",
    "HeartbeatFeature",
    "HeartbeatPolicy",
    "Hub",
    "HubArgumentError",
    "HubCall",
    "HubClientFactory",
    "HubClientOptions",
    "HubClientProtocol",
    "HubError",
    "HubFilter",
    "HubMetrics",
    "HubProxy",
    "HubResource",
    "HubServerFactory",
    "HubServerProtocol",
    "HubService",
    "HubStateError",
    "HubUsageError",
    "InvalidArguments",
    "JWTAuthenticator",
    "LocalBackplane",
    "MOBILE",
    "MetadataProvider",
    "OriginPolicy",
    "PROXY_SAFE",
    "ProtocolError",
    "RateLimit",
    "ReconnectingHubClient",
    "RefuseConnection",
    "SUBPROTOCOL",
    "ServerHeartbeatEvent",
    "TwistedHubError",
    "User",
    "__version__",
    "anyone",
    "authenticated",
    "connect",
    "full_jitter_policy",
    "has_claim",
    "heartbeat",
    "hub",
    "method",
    "redacting_log_formatter",
    "set_log_level",
]
