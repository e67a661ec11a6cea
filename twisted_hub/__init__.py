"""
twisted-hub: typed RPC hubs over WebSocket + msgpack for Twisted, with
application-level heartbeats in both directions.

The public API is re-exported here; implementation modules are private.
"""

from ._backplane import Backplane, LocalBackplane
from ._client import (
    ClientHeartbeatEvent,
    HubClientFactory,
    HubClientOptions,
    HubClientProtocol,
    HubProxy,
    ServerHeartbeatEvent,
    connect,
)
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
)
from ._hub import Hub, InvalidArguments, RefuseConnection, heartbeat, hub, method
from ._origin import OriginPolicy
from ._reconnect import ReconnectingHubClient, full_jitter_policy
from ._resource import HubResource
from ._server import ConnectionContext, HeartbeatFeature, HubServerFactory, HubServerProtocol
from ._service import HubService
from ._wire import SUBPROTOCOL, CloseCode, ErrorCode, ProtocolError

__version__ = "0.1.0"

__all__ = [
    "SUBPROTOCOL",
    "FAST_DETECTION",
    "MOBILE",
    "PROXY_SAFE",
    "CallTimeoutError",
    "Backplane",
    "ClientHeartbeatEvent",
    "ClockOffset",
    "CloseCode",
    "ConnectionClosedError",
    "ConnectTimeoutError",
    "ConnectionContext",
    "DisconnectKind",
    "DisconnectReason",
    "ErrorCode",
    "HandshakeError",
    "HeartbeatConfigurationError",
    "HeartbeatConfigurationWarning",
    "HeartbeatFeature",
    "HeartbeatPolicy",
    "Hub",
    "HubClientFactory",
    "HubClientOptions",
    "HubClientProtocol",
    "HubError",
    "HubProxy",
    "HubServerFactory",
    "HubServerProtocol",
    "HubService",
    "HubResource",
    "OriginPolicy",
    "InvalidArguments",
    "LocalBackplane",
    "ProtocolError",
    "ReconnectingHubClient",
    "RefuseConnection",
    "ServerHeartbeatEvent",
    "connect",
    "full_jitter_policy",
    "heartbeat",
    "hub",
    "method",
    "__version__",
]
