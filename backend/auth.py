"""Who is calling: HS256 bearer JWTs when a secret is set, otherwise the single local user (loopback only)."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.di import Provide
from litestar.exceptions import ImproperlyConfiguredException, NotAuthorizedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult, DefineMiddleware
from litestar.security.jwt import JWTAuth, JWTAuthenticationMiddleware, Token

from backend.chat import tickets
from backend.errors import NO_CREDENTIALS
from backend.settings import Settings

log = logging.getLogger(__name__)

LOCAL_USER_ID = "local"
CLOCK_SKEW_SECONDS = 30
MAX_SUBJECT_CHARS = 255  # the width of every `user_id` column
STREAM_ROUTE = re.compile(r"/chatkit/(?P<message_id>[0-9a-fA-F-]{36})/stream")
PUBLIC_PATHS = ["^/health$", "^/ready$", "^/schema", "^/$", "^/static/", "^/favicon", "^/metrics$"]


@dataclass(frozen=True, slots=True)
class User:
    """The authenticated caller. `id` is the JWT `sub`, or `local` in local mode."""

    id: str


def _utc(moment: datetime) -> datetime:
    return (moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)).replace(microsecond=0)


def valid_subject(sub: str) -> bool:
    """Tell whether a JWT `sub` can be stored as a user id: 1 to 255 characters, no NUL, valid Unicode.

    Args:
        sub: The claim as decoded from the token's JSON.

    Returns:
        False for an empty or over-long subject, one containing NUL, or one with a lone surrogate (U+D800 to U+DFFF).
    """
    if not 0 < len(sub) <= MAX_SUBJECT_CHARS or "\x00" in sub:
        return False
    try:
        sub.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass
class LenientToken(Token):
    """A token whose issuer may omit `iat`, with a little clock-skew allowance (`exp` and `sub` stay mandatory)."""

    def __post_init__(self) -> None:
        """Check `sub`; `exp`/`iat` were already verified by PyJWT with the clock-skew leeway.

        Litestar's own check refuses any `exp` in the past, which would undo the leeway; a failure here becomes 401.
        """
        if not isinstance(self.sub, str) or not valid_subject(self.sub):
            raise ImproperlyConfiguredException(
                f"sub must be 1 to {MAX_SUBJECT_CHARS} characters, without NUL or lone surrogates"
            )
        self.exp = _utc(self.exp)
        self.iat = _utc(self.iat)

    @classmethod
    def decode_payload(
        cls,
        encoded_token: str,
        secret: str,
        algorithms: list[str],
        issuer: str | Sequence[str] | None = None,
        audience: str | Sequence[str] | None = None,
        options: Any = None,
    ) -> Any:
        """Verify with PyJWT (allowing `CLOCK_SKEW_SECONDS` on `exp`/`nbf`/`iat`), then normalise `iat`."""
        payload = jwt.decode(
            jwt=encoded_token,
            key=secret,
            algorithms=algorithms,
            issuer=issuer,
            audience=audience,
            options=options,
            leeway=CLOCK_SKEW_SECONDS,
        )
        now = int(time.time())
        iat = payload.get("iat", payload.get("nbf", now))
        # Litestar rejects an `iat` even a second in the future; the skew allowance above already vetted it.
        payload["iat"] = min(iat, now) if isinstance(iat, int | float) else iat
        return payload


class BearerJWTMiddleware(JWTAuthenticationMiddleware):
    """Litestar's JWT middleware, but only the `Bearer` scheme is accepted (or a stream ticket, on the rejoin route)."""

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        """Read `Authorization: Bearer <jwt>` and verify it; without one, redeem a `?ticket=` on a stream rejoin."""
        headers = connection.headers.getall(self.auth_header, [])
        if len(headers) > 1:
            raise NotAuthorizedException("Send exactly one Authorization header.")
        header = headers[0] if headers else ""
        if not header and "ticket" in connection.query_params:
            return await _ticket_user(connection)
        if not header:
            raise NotAuthorizedException(NO_CREDENTIALS)
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAuthorizedException("The Authorization header must be 'Bearer <token>'.")
        return await self.authenticate_token(encoded_token=token.strip(), connection=connection)


async def _ticket_user(connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
    """The user of a stream ticket (`backend.chat.tickets`), valid only on `GET /chatkit/{message_id}/stream`."""
    route = STREAM_ROUTE.fullmatch(connection.scope["path"])
    if route is None or connection.scope.get("method") != "GET":
        raise NotAuthorizedException("A stream ticket is accepted only to rejoin a stream.")
    try:
        message_id = uuid.UUID(route["message_id"])
    except ValueError:
        message_id = None
    ticket = connection.query_params["ticket"]
    user_id = await tickets.redeem(connection.app.state.database, ticket, message_id) if message_id else None
    if user_id is None:
        raise NotAuthorizedException("The stream ticket is unknown, expired, already used or for another message.")
    return AuthenticationResult(user=User(user_id), auth=None)


class LocalUserMiddleware(AbstractAuthenticationMiddleware):
    """Local mode: every request is the one local user."""

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        """Return the local user without looking at any header."""
        return AuthenticationResult(user=User(LOCAL_USER_ID), auth=None)


async def _user_from_token(token: Token, _: ASGIConnection[Any, Any, Any, Any]) -> User | None:
    return User(token.sub) if token.sub else None


def auth_middleware(settings: Settings) -> DefineMiddleware:
    """Build the authentication middleware the settings call for.

    Args:
        settings: Application settings (secret, issuer, audience).

    Returns:
        JWT middleware when a secret is configured, otherwise the local-user middleware.
    """
    if settings.auth_secret is None:
        log.warning(
            "local mode: no AUTH_SECRET is set, so every request is the user %r. Set AUTH_SECRET before exposing "
            "this server to anyone else.",
            LOCAL_USER_ID,
        )
        return DefineMiddleware(LocalUserMiddleware, exclude=PUBLIC_PATHS)
    jwt_auth = JWTAuth[User](
        token_secret=settings.auth_secret,
        retrieve_user_handler=_user_from_token,
        algorithm="HS256",
        token_cls=LenientToken,
        accepted_issuers=[settings.jwt_issuer] if settings.jwt_issuer else None,
        accepted_audiences=[settings.jwt_audience] if settings.jwt_audience else None,
        exclude=PUBLIC_PATHS,
        authentication_middleware_class=BearerJWTMiddleware,
    )
    return jwt_auth.middleware


def provide_user(request: Request[User, Any, Any]) -> User:
    """Dependency: the authenticated user of this request."""
    return request.user


USER_DEPENDENCY = {"user": Provide(provide_user, sync_to_thread=False)}
