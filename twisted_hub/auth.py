"""
Authentication and authorization (docs/auth.md): an authenticator turns a
connection's access token into a L{User} or refuses it; policies decide per
hub and per method who may call.
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

__all__ = [
    "AuthenticationFailed",
    "Credentials",
    "Forbidden",
    "JWTAuthenticator",
    "User",
    "anyone",
    "authenticated",
    "has_claim",
    "redacting_log_formatter",
]
