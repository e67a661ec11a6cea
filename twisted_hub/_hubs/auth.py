"""
Authentication and authorization (C{docs/auth.md}).

- Where a client's access token is in its upgrade request (L{token_from_request}):
  the C{Authorization: Bearer} header, a subprotocol C{twisted-hub.bearer.TOKEN}
  (what a browser can send), or the query parameter C{access_token}; and
  how a URI is written down without it (L{redact_uri}).
- What an authenticator gets (L{Credentials}) and returns (L{User}), how it
  refuses (L{AuthenticationFailed}: 401, L{Forbidden}: 403), and running
  it, sync, Deferred or C{async def}, within a deadline (L{run_authenticator}).
- Authorization policies over a user and a call (L{authenticated},
  L{anyone}, L{has_claim}) and the filter hook that checks the one that
  applies to a method before it runs (L{authorization_hook}).
- L{JWTAuthenticator}: JSON Web Tokens on PyJWT, with key rotation.

No I/O; time only through the clock given.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl, urlencode

from twisted.internet.defer import Deferred, TimeoutError, ensureDeferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from .._core.base_error import HubArgumentError, HubUsageError
from .._core.errors import HubError
from .._core.user import User
from .._core.wire import ErrorCode
from .._support.logging import HUB_LOG_OBSERVER
from .hub import RefuseConnection

if TYPE_CHECKING:
    from autobahn.websocket.types import ConnectionRequest

    from .filters import CallNext, HubCall

__all__ = [
    "ACCESS_TOKEN_PARAMETER",
    "TOKEN_SUBPROTOCOL_PREFIX",
    "AuthenticationFailed",
    "Authenticator",
    "Credentials",
    "Forbidden",
    "JWTAuthenticator",
    "Policy",
    "User",
    "anyone",
    "authenticated",
    "authorization_hook",
    "has_claim",
    "redact_uri",
    "redacting_log_formatter",
    "run_authenticator",
    "token_from_request",
]

#: through twisted-hub's level filter (set_log_level, twistd hub --log-level), as every line of ours
_log = Logger(observer=HUB_LOG_OBSERVER)

#: the query parameter a client may carry its access token in (as SignalR's clients do)
ACCESS_TOKEN_PARAMETER = "access_token"
#: a subprotocol offered as C{twisted-hub.bearer.TOKEN} carries the access token (never selected)
TOKEN_SUBPROTOCOL_PREFIX = "twisted-hub.bearer."
#: what a redacted token reads as
REDACTED = "REDACTED"
#: seconds an authenticator may take by default (the connection's, or a refresh's)
DEFAULT_AUTHENTICATION_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Credentials:
    """
    What an authenticator decides on.

    @ivar token: the access token the client sent (None: it sent none).
    @ivar source: where it was: C{"header"} (C{Authorization: Bearer}),
        C{"subprotocol"}, C{"query"} (C{access_token=}), C{"refresh"} (a
        fresh token over the open connection), or None.
    @ivar hub: the name of the hub the client connects to.
    @ivar request: the upgrade request (headers, peer, path ...).
    @ivar now: the server's clock (compare a token's expiry with it).
    @ivar previous: on a refresh, the connection's user so far; else None.
    """

    token: str | None
    source: str | None
    hub: str
    request: ConnectionRequest
    now: float
    previous: User | None = None

    def __repr__(self) -> str:
        token = "None" if self.token is None else f"<{len(self.token)} characters>"
        return f"Credentials(token={token}, source={self.source!r}, hub={self.hub!r}, now={self.now!r})"


class AuthenticationFailed(RefuseConnection):
    """
    Raise in an authenticator: no valid credentials.  The upgrade is
    refused with 401 (a refresh is answered with C{unauthenticated}).
    """

    def __init__(self, reason: str = "authentication required", status: int = 401) -> None:
        super().__init__(status, reason)


class Forbidden(RefuseConnection):
    """
    Raise in an authenticator: the credentials are valid, but this user may
    not connect (to this hub).  The upgrade is refused with 403 (a refresh
    is answered with C{forbidden}).
    """

    def __init__(self, reason: str = "forbidden", status: int = 403) -> None:
        super().__init__(status, reason)


#: An authenticator: credentials in, a L{User} out (or raise
#: L{AuthenticationFailed} / L{Forbidden}); it may return a Deferred or be
#: an C{async def}.  Returning None refuses with 401.
Authenticator = Callable[[Credentials], "User | None | Deferred[User | None] | Awaitable[User | None]"]


def token_from_request(request: ConnectionRequest) -> tuple[str | None, str | None]:
    """
    The access token of an upgrade request and where it was: the
    C{Authorization: Bearer} header, else a C{twisted-hub.bearer.TOKEN}
    subprotocol, else the C{access_token} query parameter; C{(None, None)}
    when there is none.
    """
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip(), "header"
    for offered in request.protocols:
        if offered.startswith(TOKEN_SUBPROTOCOL_PREFIX) and len(offered) > len(TOKEN_SUBPROTOCOL_PREFIX):
            return offered[len(TOKEN_SUBPROTOCOL_PREFIX):], "subprotocol"
    values = request.params.get(ACCESS_TOKEN_PARAMETER)
    if values and values[0]:
        return values[0], "query"
    return None, None


def redact_uri(uri: bytes) -> bytes:
    """
    C{uri} with the value of every C{access_token} query parameter replaced
    by C{REDACTED}: what a log may say about a request.
    """
    path, separator, query = uri.partition(b"?")
    if not separator or ACCESS_TOKEN_PARAMETER.encode() not in query:
        return uri
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    kept = [(key, REDACTED if key == ACCESS_TOKEN_PARAMETER else value) for key, value in pairs]
    return path + b"?" + urlencode(kept, safe=REDACTED).encode("latin-1")


class _RedactedRequest:
    """A request as an access log may see it: its URI and Referer without tokens."""

    def __init__(self, request: Any) -> None:
        self._request = request
        self.uri = redact_uri(request.uri)

    def getHeader(self, name: bytes | str) -> Any:
        value = self._request.getHeader(name)
        if isinstance(value, bytes) and (name.lower() if isinstance(name, bytes) else name.lower().encode()) == b"referer":
            return redact_uri(value)
        return value

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)


def redacting_log_formatter(timestamp: str, request: Any) -> str:
    """
    Twisted's combined access-log format, with every C{access_token} in the
    request's URI and Referer replaced by C{REDACTED}:
    C{Site(root, logFormatter=redacting_log_formatter)} (what L{HubService}
    and C{twistd hub} use).
    """
    from twisted.web.http import combinedLogFormatter

    line: str = combinedLogFormatter(timestamp, cast(Any, _RedactedRequest(request)))
    return line


def _checked_user(user: object, now: float) -> User:
    """What the authenticator returned, as a L{User}; a refusal otherwise."""
    if user is None:
        raise AuthenticationFailed()
    if not isinstance(user, User):
        raise HubUsageError(f"an authenticator must return a User (or None), got {user!r}")
    if user.expires_at is not None and user.expires_at <= now:
        raise AuthenticationFailed("token expired")
    return user


def run_authenticator(
    authenticator: Authenticator, credentials: Credentials, clock: IReactorTime, timeout: float,
) -> Deferred[User]:
    """
    Run C{authenticator(credentials)}: a Deferred of the L{User}, failing
    with its L{RefuseConnection} (L{AuthenticationFailed}, L{Forbidden}),
    with L{TimeoutError} after C{timeout} seconds (the authenticator's own
    Deferred is cancelled: an C{async def} gets C{CancelledError}), or with
    whatever else it raised.  An answer it had at once is there at once.
    """
    now = credentials.now
    try:
        outcome = authenticator(credentials)
    except Exception:
        return fail()
    if isinstance(outcome, Deferred) or inspect.isawaitable(outcome):
        running: Deferred[Any] = outcome if isinstance(outcome, Deferred) else ensureDeferred(cast(Any, outcome))
        running.addCallback(_checked_user, now)
        if not running.called:
            running.addTimeout(timeout, clock)
        return running
    try:
        return succeed(_checked_user(outcome, now))
    except Exception:
        return fail()


def refusal_of(failure: Failure, what: str) -> RefuseConnection:
    """
    The refusal an authenticator's failure stands for: its own
    L{RefuseConnection}; 503 when it took too long; 500 for anything else
    (logged with its traceback).  C{what} names the attempt, for the log.
    """
    error = failure.value
    if isinstance(error, RefuseConnection):
        return error
    if isinstance(error, TimeoutError):
        _log.warn("{what}: the authenticator did not answer in time", what=what)
        return RefuseConnection(503, "authentication did not finish in time")
    _log.failure("{what}: the authenticator failed", failure, what=what)
    return RefuseConnection(500, "internal server error")


# -- authorization ---------------------------------------------------------------

#: An authorization policy: may C{user} (None without an authenticator) make
#: this C{call}?  True/False, a Deferred of it, or an C{async def}; raising
#: a L{HubError} answers the call with that error instead.
Policy = Callable[[User | None, "HubCall"], Any]


def authenticated(user: User | None, call: HubCall) -> bool:
    """Policy: any authenticated user (a connection with a L{User})."""
    return user is not None


def anyone(user: User | None, call: HubCall) -> bool:
    """Policy: every connection, authenticated or not (opens one method of a guarded hub, or under deny-by-default)."""
    return True


def has_claim(name: str, *values: object) -> Policy:
    """
    Policy: a user whose claim C{name} is present (no C{values}), equals one
    of C{values}, or is a list holding one of them:
    C{has_claim("role", "admin")}, C{has_claim("scope", "chat:write")}.
    """
    wanted = frozenset(values)

    def policy(user: User | None, call: HubCall) -> bool:
        if user is None or name not in user.claims:
            return False
        if not wanted:
            return True
        claim = user.claims[name]
        if isinstance(claim, (list, tuple, set, frozenset)):
            return any(item in wanted for item in claim if isinstance(item, (str, int, float, bool)))
        if isinstance(claim, str) and " " in claim:  # an OAuth2 "scope": space-separated
            return any(part in wanted for part in claim.split())
        return isinstance(claim, (str, int, float, bool)) and claim in wanted

    policy.__name__ = f"has_claim({name!r}{''.join(f', {v!r}' for v in values)})"
    return policy


def check_policy(policy: object, where: str) -> None:
    """A policy is a callable (else L{HubArgumentError} naming C{where})."""
    if policy is not None and not callable(policy):
        raise HubArgumentError(f"{where}: authorize= takes a policy (a callable over user and call), got {policy!r}")


def _forbidden(call: HubCall) -> HubError:
    return HubError(ErrorCode.FORBIDDEN, f"not allowed to call {call.hub_name}.{call.method}")


def authorization_hook(policy: Policy | None) -> Callable[[HubCall, CallNext], Deferred[Any]]:
    """
    The filter hook (C{on_call}) that checks C{policy} before the rest of
    the chain runs; a false answer is the error C{forbidden}.  None: the
    server denies by default and no policy applies: every call is refused.
    """

    def deny(call: HubCall, proceed: CallNext) -> Deferred[Any]:
        return fail(HubError(
            ErrorCode.FORBIDDEN, f"not allowed to call {call.hub_name}.{call.method} (no policy allows it)"
        ))

    if policy is None:
        return deny

    def allowed(verdict: object, call: HubCall, proceed: CallNext) -> Deferred[Any]:
        if not verdict:
            return fail(_forbidden(call))
        return proceed(call)

    def check(call: HubCall, proceed: CallNext) -> Deferred[Any]:
        verdict = policy(call.connection.user, call)
        if isinstance(verdict, Deferred) or inspect.isawaitable(verdict):
            return maybeDeferred(lambda: verdict).addCallback(allowed, call, proceed)
        return allowed(verdict, call, proceed)

    return check


# -- JSON Web Tokens ---------------------------------------------------------------

#: a key as PyJWT takes it: a secret (str or bytes) or a key object
KeyT = Any
#: finds the key of a C{kid} (None when the token names none): a key, None
#: (unknown), a Deferred of either, or an C{async def}
KeyProvider = Callable[[str | None], Any]


class JWTAuthenticator:
    """
    Authenticates JSON Web Tokens with PyJWT (C{pip install 'twisted-hub[jwt]'}).

    The user's id is the C{sub} claim (or C{identity_claim}), its claims
    the token's payload, its expiry C{exp} (plus C{leeway}).  Expiry and
    C{nbf} are checked against the server's clock (L{Credentials.now}), so
    tests on a C{task.Clock} decide them too.

    @param keys: the verification key(s).  One key (a secret, or a public
        key for RS256/ES256 ...); a mapping C{kid -> key} for key rotation
        (a token names its key in its header's C{kid}; add the new key,
        sign with it, drop the old one once its tokens have expired); or
        a key provider C{(kid) -> key} that may return a Deferred or be an
        C{async def} (fetching a JWKS, say), returning None for an unknown kid.
    @param algorithms: the algorithms accepted (required: never let the
        token choose, e.g. C{["HS256"]} or C{["RS256"]}).
    @param audience: the C{aud} a token must carry (None: not checked).
    @param issuer: the C{iss} a token must carry (None: not checked).
    @param leeway: seconds of clock skew allowed for C{exp} and C{nbf}.
    @param required_claims: claims every token must have.
    """

    def __init__(
        self,
        keys: KeyT | Mapping[str, KeyT] | KeyProvider,
        *,
        algorithms: Sequence[str],
        audience: str | Iterable[str] | None = None,
        issuer: str | None = None,
        leeway: float = 0.0,
        identity_claim: str = "sub",
        required_claims: Iterable[str] = ("exp",),
    ) -> None:
        try:
            import jwt
        except ImportError:  # pragma: no cover - the extra is installed in tests
            raise HubUsageError("JWTAuthenticator needs PyJWT: pip install 'twisted-hub[jwt]'") from None
        self._jwt = jwt
        if isinstance(algorithms, str) or not algorithms:
            raise HubArgumentError("algorithms must be a non-empty list, e.g. ['HS256']")
        if not leeway >= 0:
            raise HubArgumentError(f"leeway must be >= 0, got {leeway!r}")
        self.algorithms = list(algorithms)
        self.audience = audience if audience is None or isinstance(audience, str) else list(audience)
        self.issuer = issuer
        self.leeway = float(leeway)
        self.identity_claim = identity_claim
        self.required_claims = [*dict.fromkeys([*required_claims, identity_claim])]
        self._keys = keys

    def __repr__(self) -> str:
        return f"JWTAuthenticator(algorithms={self.algorithms!r}, issuer={self.issuer!r})"

    def __call__(self, credentials: Credentials) -> User | Deferred[User]:
        token = credentials.token
        if token is None:
            raise AuthenticationFailed("an access token is required")
        jwt = self._jwt
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise AuthenticationFailed("malformed token") from None
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AuthenticationFailed("malformed token (kid)")
        keys = self._keys
        if isinstance(keys, Mapping):
            if kid is None:
                if len(keys) != 1:
                    raise AuthenticationFailed("the token names no key (kid)")
                key = next(iter(keys.values()))
            elif kid not in keys:
                raise AuthenticationFailed("the token's key is unknown (kid)")
            else:
                key = keys[kid]
            return self._decode(token, key, credentials.now)
        if callable(keys) and not _is_key_object(keys):
            found = keys(kid)
            if isinstance(found, Deferred) or inspect.isawaitable(found):
                return maybeDeferred(lambda: found).addCallback(self._decode_found, token, credentials.now)
            return self._decode_found(found, token, credentials.now)
        return self._decode(token, keys, credentials.now)

    def _decode_found(self, key: KeyT | None, token: str, now: float) -> User:
        if key is None:
            raise AuthenticationFailed("the token's key is unknown (kid)")
        return self._decode(token, key, now)

    def _decode(self, token: str, key: KeyT, now: float) -> User:
        jwt = self._jwt
        try:
            payload = jwt.decode(
                token, key, algorithms=self.algorithms, audience=self.audience, issuer=self.issuer,
                options={
                    # time is checked below, on the server's clock
                    "verify_exp": False, "verify_nbf": False, "verify_iat": False,
                    "require": self.required_claims,
                    "verify_aud": self.audience is not None, "verify_iss": self.issuer is not None,
                },
            )
        except jwt.InvalidTokenError as e:
            # Fixed words: a message must never quote the token.
            raise AuthenticationFailed(_jwt_refusal(jwt, e)) from None
        identity = payload.get(self.identity_claim)
        if not isinstance(identity, str) or not identity:
            raise AuthenticationFailed(f"the token's {self.identity_claim} claim is not a string")
        expires = payload.get("exp")
        if expires is not None and (isinstance(expires, bool) or not isinstance(expires, (int, float))):
            raise AuthenticationFailed("the token's exp claim is not a number")
        not_before = payload.get("nbf")
        if not_before is not None and (isinstance(not_before, bool) or not isinstance(not_before, (int, float))):
            raise AuthenticationFailed("the token's nbf claim is not a number")
        if not_before is not None and now + self.leeway < not_before:
            raise AuthenticationFailed("token not valid yet")
        expires_at = None if expires is None else float(expires) + self.leeway
        if expires_at is not None and expires_at <= now:
            raise AuthenticationFailed("token expired")
        return User(identity, payload, expires_at)


def _is_key_object(candidate: object) -> bool:
    """A key object of C{cryptography} is no key provider, callable or not."""
    return type(candidate).__module__.startswith("cryptography")


def _jwt_refusal(jwt: Any, error: Exception) -> str:
    """What a refusal says about a PyJWT error, in words of ours."""
    for kind, text in (
        ("InvalidSignatureError", "invalid token signature"),
        ("InvalidAudienceError", "the token is not for this audience"),
        ("InvalidIssuerError", "the token is not from the expected issuer"),
        ("InvalidAlgorithmError", "the token's algorithm is not accepted"),
        ("MissingRequiredClaimError", None),
        ("InvalidKeyError", "invalid key"),
        ("DecodeError", "malformed token"),
    ):
        if isinstance(error, getattr(jwt, kind)):
            if text is None:
                return f"the token lacks the {error.claim} claim"  # (a name we required)
            return text
    return "invalid token"
