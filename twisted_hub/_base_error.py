"""The one base class of every exception twisted-hub defines (a leaf module: everything imports it)."""


class TwistedHubError(Exception):
    """
    Base of every twisted-hub exception, to catch "anything from twisted-hub"
    in one clause: errors reported by the peer (L{HubError} and its kinds,
    L{HandshakeError}, L{ProtocolError}), local misuse of the API
    (L{HubUsageError}: L{HubArgumentError}, L{HubStateError},
    L{HeartbeatConfigurationError}), and L{RefuseConnection}.
    """


class HubUsageError(TwistedHubError):
    """
    Base of local misuse: this process called the API wrongly (a bad
    argument, or a call at a time it cannot be made).  Nothing was sent; the
    peer did nothing wrong.  Errors from the other side are L{ProtocolError}
    (it broke the protocol) and L{HubError} (it answered with an error).
    """


class HubArgumentError(HubUsageError, ValueError, TypeError):
    """
    A bad argument, option or combination of arguments (e.g. a limit of 0,
    both C{hubs} and C{factory}).  Also a C{ValueError} and a C{TypeError},
    which these checks raised before it existed, so older C{except} clauses
    still catch it.
    """


class HubStateError(HubUsageError, RuntimeError):
    """
    A call at a time it cannot be made (e.g. asking a service for its ports
    before it started).  Also a C{RuntimeError}, which these checks raised
    before it existed.
    """


class HubAttributeError(HubUsageError, AttributeError):
    """
    A receiver proxy (C{self.clients.all}, ...) asked for a method the
    receiver interface does not have.  Also an C{AttributeError}, so
    C{hasattr} and C{getattr(proxy, name, default)} work as on any object.
    """
