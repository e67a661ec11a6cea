"""
Authenticators and hubs for the authentication tests (tests/test_auth*.py),
also loaded by `twistd hub --authenticator tests.helpers.auth:...`.

The matrix authenticator decides by the token: ``KIND-OUTCOME``, where
KIND is how it answers (``sync``: at once; ``deferred``: a Deferred that
fires later; ``async``: an ``async def`` that awaits first) and OUTCOME what
it answers (``accept``, ``refuse`` 401, ``forbid`` 403, ``raise`` an
unexpected exception, ``hang``: never answers).  A sync authenticator cannot
hang without blocking the reactor, so ``sync-hang`` does not exist.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from twisted_hub import Hub, hub, method
from twisted_hub.auth import AuthenticationFailed, Credentials, Forbidden, User, has_claim

KINDS = ("sync", "deferred", "async")
OUTCOMES = ("accept", "refuse", "forbid", "raise", "hang")
#: what each outcome gets at the upgrade: the HTTP status (None: accepted)
STATUS = {"accept": None, "refuse": 401, "forbid": 403, "raise": 500, "hang": 503}


def matrix() -> list[tuple[str, str]]:
    """Every (kind, outcome) the matrix covers."""
    return [(kind, outcome) for kind in KINDS for outcome in OUTCOMES if (kind, outcome) != ("sync", "hang")]


class MatrixAuthenticator:
    """
    Answers as its token says (see the module's docstring); a Deferred or
    async answer comes C{delay} seconds later on C{clock}.

    @ivar cancelled: tokens whose hanging authentication was cancelled (an
        async one's C{finally} ran).
    """

    def __init__(self, clock: IReactorTime | None = None, delay: float = 0.05) -> None:
        self._clock = clock
        self.delay = delay
        self.cancelled: list[str] = []
        self.seen: list[Credentials] = []

    @property
    def clock(self) -> IReactorTime:
        if self._clock is None:
            from twisted.internet import reactor

            self._clock = reactor  # type: ignore[assignment]
        assert self._clock is not None
        return self._clock

    def __call__(self, credentials: Credentials) -> Any:
        self.seen.append(credentials)
        if credentials.token is None:
            raise AuthenticationFailed("no token")
        token = credentials.token
        kind, _, outcome = token.partition("-")
        if kind == "sync":
            return self.decide(kind, outcome, credentials)
        if kind == "deferred":
            if outcome == "hang":
                return Deferred(lambda _: self.cancelled.append(token))
            return deferLater(self.clock, self.delay, self.decide, kind, outcome, credentials)
        return self.decide_async(kind, outcome, credentials, token)

    async def decide_async(self, kind: str, outcome: str, credentials: Credentials, token: str) -> User:
        try:
            if outcome == "hang":
                await Deferred()
            await deferLater(self.clock, self.delay, lambda: None)
            return self.decide(kind, outcome, credentials)
        except CancelledError:
            self.cancelled.append(token)
            raise

    @staticmethod
    def decide(kind: str, outcome: str, credentials: Credentials) -> User:
        if outcome == "accept":
            return User(f"{kind}-user", {"kind": kind, "role": "admin" if kind == "sync" else "user"})
        if outcome == "forbid":
            raise Forbidden(f"{kind}: not on this hub")
        if outcome == "raise":
            raise RuntimeError(f"{kind}: authenticator bug")
        raise AuthenticationFailed(f"{kind}: bad token")


@hub("whoami")
class WhoAmIHub(Hub):
    """Says who the connection belongs to; one method only admins may call."""

    @method
    def whoami(self) -> list[Any]:
        user = self.connection.user
        return [None, None] if user is None else [user.id, dict(user.claims)]

    @method(authorize=has_claim("role", "admin"))
    def admin(self) -> str:
        return "admin only"


class ExpiringAuthenticator:
    """
    Tokens ``NAME:EXPIRY`` or ``NAME~EXPIRY`` (all HTTP token characters,
    so a browser's subprotocol can carry it; EXPIRY: seconds on the
    server's clock, or ``never``); anything else is refused.  Counts what it
    authenticated.
    """

    def __init__(self) -> None:
        self.tokens: list[str] = []

    def __call__(self, credentials: Credentials) -> User:
        name, _, expiry = (credentials.token or "").replace("~", ":", 1).partition(":")
        if not name or not expiry:
            raise AuthenticationFailed("no such token")
        self.tokens.append(credentials.token or "")
        return User(name, {"source": credentials.source}, None if expiry == "never" else float(expiry))


class RealTimeExpiring(ExpiringAuthenticator):
    """L{ExpiringAuthenticator} whose expiry is seconds from now on the server's clock (for real sockets)."""

    def __call__(self, credentials: Credentials) -> User:
        user = super().__call__(credentials)
        if user.expires_at is None:
            return user
        return User(user.id, user.claims, credentials.now + user.expires_at)
