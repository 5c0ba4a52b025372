"""Who is calling: HS256 bearer JWTs when a secret is set, otherwise the single local user (loopback only)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.di import Provide
from litestar.exceptions import NotAuthorizedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult, DefineMiddleware
from litestar.security.jwt import JWTAuth, JWTAuthenticationMiddleware, Token

from backend.errors import NO_CREDENTIALS
from backend.settings import Settings

log = logging.getLogger(__name__)

LOCAL_USER_ID = "local"
CLOCK_SKEW_SECONDS = 30
PUBLIC_PATHS = ["^/health$", "^/ready$", "^/schema", "^/$", "^/static/", "^/favicon"]


@dataclass(frozen=True, slots=True)
class User:
    """The authenticated caller. `id` is the JWT `sub`, or `local` in local mode."""

    id: str


@dataclass
class LenientToken(Token):
    """A token whose issuer may omit `iat`, with a little clock-skew allowance (`exp` and `sub` stay mandatory)."""

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
            issuer=issuer,  # type: ignore[arg-type]
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
    """Litestar's JWT middleware, but only the `Bearer` scheme is accepted."""

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        """Read `Authorization: Bearer <jwt>` and verify it."""
        header = connection.headers.get(self.auth_header)
        if not header:
            raise NotAuthorizedException(NO_CREDENTIALS)
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAuthorizedException("The Authorization header must be 'Bearer <token>'.")
        return await self.authenticate_token(encoded_token=token.strip(), connection=connection)


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
