"""
twisted-hub: typed RPC hubs over WebSocket + msgpack for Twisted, with
application-level heartbeats in both directions.

The public API is re-exported here; implementation modules are private.
"""

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
    "Backplane",
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
    "ConnectionGuard",
    "ConnectionLimits",
    "DisconnectKind",
    "DisconnectReason",
    "ErrorCode",
    "FAST_DETECTION",
    "HandshakeError",
    "HeartbeatConfigurationError",
    "HeartbeatConfigurationWarning",
    "HeartbeatFeature",
    "HeartbeatPolicy",
    "Hub",
    "HubArgumentError",
    "HubClientFactory",
    "HubClientOptions",
    "HubClientProtocol",
    "HubError",
    "HubMetrics",
    "HubProxy",
    "HubResource",
    "HubServerFactory",
    "HubServerProtocol",
    "HubService",
    "HubStateError",
    "HubUsageError",
    "InvalidArguments",
    "LocalBackplane",
    "MOBILE",
    "MetadataProvider",
    "OriginPolicy",
    "PROXY_SAFE",
    "ProtocolError",
    "ReconnectingHubClient",
    "RefuseConnection",
    "SUBPROTOCOL",
    "ServerHeartbeatEvent",
    "TwistedHubError",
    "__version__",
    "connect",
    "full_jitter_policy",
    "heartbeat",
    "hub",
    "method",
]
