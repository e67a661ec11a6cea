"""
Who a connection belongs to (L{User}): what an authenticator returns and the
server's session keeps (docs/auth.md).  Plain data, part of the sans-IO core;
C{twisted_hub.auth} is where users import it from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .base_error import HubArgumentError

__all__ = ["User"]


@dataclass(frozen=True, slots=True)
class User:
    """
    Who a connection belongs to: C{self.connection.user} in a hub.

    @ivar id: the identity (a JWT's C{sub}); a fresh token for a connection
        must name the same one.
    @ivar claims: what the authenticator knows about the user (a JWT's
        payload: roles, scopes, tenant ...), read-only.
    @ivar expires_at: when the user's token expires, on the server's clock
        (C{reactor.seconds()}: Unix time on a real reactor); None: never.
        At that time the connection is closed with 4005 unless the client
        handed over a fresh token.
    """

    id: str
    claims: Mapping[str, Any] = field(default_factory=dict)
    expires_at: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str):
            raise HubArgumentError(f"User.id must be a str, got {self.id!r}")
        object.__setattr__(self, "claims", MappingProxyType(dict(self.claims)))

    def expires_in(self, now: float) -> float | None:
        """Seconds left at C{now} (0 once expired); None: the token does not expire."""
        if self.expires_at is None:
            return None
        return max(self.expires_at - now, 0.0)
