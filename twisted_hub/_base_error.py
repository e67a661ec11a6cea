"""The one base class of every exception twisted-hub defines (a leaf module: everything imports it)."""


class TwistedHubError(Exception):
    """
    Base of every twisted-hub exception, to catch "anything from twisted-hub"
    in one clause: errors reported by the peer (L{HubError} and its kinds,
    L{HandshakeError}, L{ProtocolError}) and local misconfiguration
    (L{HeartbeatConfigurationError}), and L{RefuseConnection}.
    """
