"""HTTP-layer guards: header size, local-mode network rules, cross-site origins, and request bodies.

Two pure ASGI middlewares, both cheap enough to run on every request (streams included):

- `TransportGuard` runs first, before authentication: it caps the total header size (431), and in local mode (no
  `AUTH_SECRET`) refuses requests that did not arrive on a loopback socket (403), carry a `Host` that is not a loopback
  name (421, DNS rebinding) or a foreign `Origin` (403). With `CORS_ORIGINS` set, a state-changing request from an
  origin outside the list gets 403 (CORS headers alone do not stop a browser's "simple" cross-site POST).
- `BodyGuard` runs inside the route: a route that declares a body (`data: JSONBody[...]`, or a multipart body) accepts
  only that media type (415), and a JSON body is parsed once up front so that bytes which are not UTF-8 or nesting
  deep enough to exhaust the parser answer 400 `malformed_json` instead of 500. The parsed body is cached on the
  request, so the handler does not parse it again.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from litestar import Request
from litestar.enums import RequestEncodingType, ScopeType
from litestar.exceptions import SerializationException
from litestar.middleware import DefineMiddleware
from litestar.params import BodyKwarg

from backend.errors import (
    MALFORMED_JSON,
    ForbiddenError,
    HeadersTooLargeError,
    MalformedBodyError,
    MisdirectedRequestError,
    UnsupportedMediaTypeError,
)
from backend.settings import Settings

if TYPE_CHECKING:
    from litestar.handlers import BaseRouteHandler
    from litestar.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

LOOPBACK_HOST_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


@dataclass(frozen=True, slots=True)
class GuardPolicy:
    """What `TransportGuard` enforces, derived once from the settings.

    Attributes:
        local_mode: No `AUTH_SECRET`: loopback socket, loopback `Host` and loopback (or listed) `Origin` only.
        port: The configured `PORT`; 0 accepts any port in the `Host` header.
        allowed_origins: `CORS_ORIGINS`, exactly as configured.
        max_header_bytes: Cap on the summed length of every header name and value.
    """

    local_mode: bool
    port: int
    allowed_origins: frozenset[str]
    max_header_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> GuardPolicy:
        """Build the policy from application settings."""
        return cls(
            local_mode=settings.local_mode,
            port=settings.port,
            allowed_origins=frozenset(origin.rstrip("/") for origin in settings.cors_origins),
            max_header_bytes=settings.max_header_bytes,
        )

    @property
    def any_origin(self) -> bool:
        """True when `CORS_ORIGINS` contains `*`."""
        return "*" in self.allowed_origins


@lru_cache(maxsize=256)
def is_loopback_ip(address: str) -> bool:
    """Tell whether a socket address is a loopback IP (127.0.0.0/8, ::1, or ::ffff:127.x)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


@lru_cache(maxsize=256)
def split_host(host: str, scheme: str) -> tuple[str, int | None]:
    """Split a `Host` header into its lower-cased name (IPv6 keeps its brackets) and port.

    Args:
        host: The header value, e.g. `localhost:8000` or `[::1]:8000`.
        scheme: The request scheme, which gives the default port.

    Returns:
        `(name, port)`; the port is None when it is not a number.
    """
    host = host.strip().lower()
    if host.startswith("["):
        name, _, rest = host.partition("]")
        name, port = name + "]", rest.removeprefix(":")
    else:
        name, _, port = host.partition(":")
    if not port:
        return name, DEFAULT_PORTS.get(scheme, 80)
    return name, int(port) if port.isdigit() else None


@lru_cache(maxsize=256)
def is_loopback_origin(origin: str) -> bool:
    """Tell whether an `Origin` header names a page served from this machine (any port)."""
    try:
        parts = urlsplit(origin)
        return parts.scheme in {"http", "https"} and (parts.hostname or "") in {"localhost", "127.0.0.1", "::1"}
    except ValueError:
        return False


class TransportGuard:
    """Pure ASGI middleware: header size, local-mode network rules and cross-site origins (see the module doc)."""

    def __init__(self, app: ASGIApp, policy: GuardPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the request, raising an `AppError` the app's exception handlers turn into a JSON answer."""
        if scope["type"] in {"http", "websocket"}:
            self.check(scope)
        await self.app(scope, receive, send)

    def check(self, scope: Scope) -> None:
        """Raise if the request breaks a rule; return quietly otherwise."""
        size = 0
        host = origin = None
        for name, value in scope["headers"]:
            size += len(name) + len(value)
            if name == b"host":
                host = value.decode("latin-1")
            elif name == b"origin":
                origin = value.decode("latin-1")
        policy = self.policy
        if size > policy.max_header_bytes:
            raise HeadersTooLargeError(f"The request headers exceed {policy.max_header_bytes} bytes.")
        if policy.local_mode:
            self._check_local(scope, host, origin)
        elif (
            origin is not None
            and policy.allowed_origins
            and scope.get("method", "GET") in UNSAFE_METHODS
            and not self._origin_allowed(origin, host)
        ):
            raise ForbiddenError(f"Requests from the origin {origin!r} are not allowed.", code="forbidden_origin")

    def _check_local(self, scope: Scope, host: str | None, origin: str | None) -> None:
        server, client = scope.get("server"), scope.get("client")
        if not (server and client and is_loopback_ip(str(server[0])) and is_loopback_ip(str(client[0]))):
            log.warning(
                "local mode: refused a request from %s to %s (not a loopback socket); set AUTH_SECRET to serve "
                "other machines",
                client[0] if client else "unknown",
                server[0] if server else "unknown",
            )
            raise ForbiddenError(
                "This server runs in local mode (no AUTH_SECRET) and only answers requests from this machine.",
                code="local_mode_loopback_only",
            )
        name, port = split_host(host or "", scope.get("scheme", "http"))
        allowed_ports = {self.policy.port, server[1]}
        if name not in LOOPBACK_HOST_NAMES or (self.policy.port != 0 and port not in allowed_ports):
            raise MisdirectedRequestError(
                "In local mode the Host header must be localhost, 127.0.0.1 or [::1] with the server's port."
            )
        if origin is not None and not (is_loopback_origin(origin) or self._origin_allowed(origin, host)):
            raise ForbiddenError(f"Requests from the origin {origin!r} are not allowed.", code="forbidden_origin")

    def _origin_allowed(self, origin: str, host: str | None) -> bool:
        """Same-origin requests, and origins listed in `CORS_ORIGINS`."""
        if origin.rstrip("/") in self.policy.allowed_origins or self.policy.any_origin:
            return True
        try:
            return host is not None and urlsplit(origin).netloc.lower() == host.strip().lower()
        except ValueError:
            return False


def transport_guard(settings: Settings) -> DefineMiddleware:
    """The `TransportGuard` for these settings, ready for `Litestar(middleware=[...])` (put it first)."""
    return DefineMiddleware(TransportGuard, policy=GuardPolicy.from_settings(settings))


def body_media_type(handler: BaseRouteHandler) -> str | None:
    """The media type a route reads its `data` body as, or None when it takes no body.

    Args:
        handler: A route handler.

    Returns:
        E.g. `application/json` for `data: JSONBody[T]` (also for a plain `data: T`), `multipart/form-data` for
        `data: MultipartBody[T]`.
    """
    field = handler.parsed_fn_signature.parameters.get("data")
    if field is None:
        return None
    kwarg = field.kwarg_definition
    media_type = kwarg.media_type if isinstance(kwarg, BodyKwarg) else RequestEncodingType.JSON
    return str(getattr(media_type, "value", media_type))


def content_type_matches(header: str, expected: str) -> bool:
    """Tell whether a `Content-Type` value is `expected` (any case), allowing only a UTF-8 charset parameter for JSON.

    Args:
        header: The request's `Content-Type` header, possibly empty.
        expected: The media type the route reads, e.g. `application/json`.

    Returns:
        True when the body may be read as `expected`.
    """
    media_type, *params = (part.strip().lower() for part in header.split(";"))
    if media_type != expected:
        return False
    if expected != RequestEncodingType.JSON.value:
        return True
    charsets = [p.partition("=")[2].strip('"') for p in params if p.startswith("charset=")]
    return all(charset in {"utf-8", "utf8"} for charset in charsets)


class BodyGuard:
    """Pure ASGI middleware: the declared body media type only (415), and a JSON body parsed up front (400)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._media_types: dict[int, str | None] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the body of a route that takes one, then hand on."""
        if scope["type"] == ScopeType.HTTP and (expected := self._expected(scope["route_handler"])) is not None:
            content_type = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"content-type"), "")
            if not content_type_matches(content_type, expected):
                raise UnsupportedMediaTypeError(f"Send the body as {expected} (Content-Type: {expected}).")
            if expected == RequestEncodingType.JSON.value:
                await parse_json_body(Request(scope, receive))
        await self.app(scope, receive, send)

    def _expected(self, handler: BaseRouteHandler) -> str | None:
        key = id(handler)
        if key not in self._media_types:
            self._media_types[key] = body_media_type(handler)
        return self._media_types[key]


async def parse_json_body(request: Request[Any, Any, Any]) -> None:
    """Parse the JSON body into the request's cache, mapping every decoding failure to 400 `malformed_json`.

    Litestar maps msgspec's `DecodeError` to a 400 itself, but not the `UnicodeDecodeError` for bytes that are not
    UTF-8, nor the `RecursionError` for very deep nesting; both would otherwise be a 500.
    """
    try:
        await request.json()
    except (SerializationException, UnicodeDecodeError, RecursionError):
        raise MalformedBodyError(MALFORMED_JSON) from None
