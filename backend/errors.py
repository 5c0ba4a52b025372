"""One error hierarchy, and the one place that maps every error to an HTTP response `{"error": {code, message}}`.

Every error body also carries the request's `request_id` (see `backend.request_ids`).
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import (
    HTTPException,
    InternalServerException,
    NotAuthorizedException,
    SerializationException,
    ValidationException,
)
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_401_UNAUTHORIZED,
    HTTP_403_FORBIDDEN,
    HTTP_404_NOT_FOUND,
    HTTP_405_METHOD_NOT_ALLOWED,
    HTTP_409_CONFLICT,
    HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    HTTP_415_UNSUPPORTED_MEDIA_TYPE,
    HTTP_421_MISDIRECTED_REQUEST,
    HTTP_422_UNPROCESSABLE_ENTITY,
    HTTP_429_TOO_MANY_REQUESTS,
    HTTP_431_REQUEST_HEADER_FIELDS_TOO_LARGE,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
)
from psycopg import InterfaceError as DBAPIInterfaceError
from psycopg import OperationalError as DBAPIOperationalError
from sqlalchemy.exc import DataError, DBAPIError
from sqlalchemy.exc import InterfaceError as SAInterfaceError
from sqlalchemy.exc import OperationalError as SAOperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from backend import request_ids

log = logging.getLogger(__name__)

NO_CREDENTIALS = "Send an 'Authorization: Bearer <token>' header."
DATABASE_UNAVAILABLE = "The database is unavailable."
MALFORMED_JSON = "The request body is not valid JSON."
DATABASE_NOT_MIGRATED = "The database schema is not at this server's migration head."


class AppError(Exception):
    """Base of every error the services raise on purpose. Subclasses fix the status and the code."""

    status_code: int = HTTP_400_BAD_REQUEST
    code: str = "bad_request"
    details: dict[str, str | int | float] | None = None
    """More fields of the error body (a 429's limit, usage and reset time)."""
    headers: dict[str, str] | None = None
    """Response headers (a 429's `Retry-After`)."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class NotFoundError(AppError):
    """The row does not exist, or belongs to someone else (the two are indistinguishable on purpose)."""

    status_code = HTTP_404_NOT_FOUND
    code = "not_found"


class ConflictError(AppError):
    """The request clashes with the current state, e.g. a run already in progress."""

    status_code = HTTP_409_CONFLICT
    code = "conflict"


class InvalidInputError(AppError):
    """Input that passed the schema but is still unusable (e.g. a bad pagination cursor)."""

    status_code = HTTP_422_UNPROCESSABLE_ENTITY
    code = "validation_error"


class MalformedBodyError(AppError):
    """The body is not JSON we can read: bad syntax, not UTF-8, or nested too deeply."""

    status_code = HTTP_400_BAD_REQUEST
    code = "malformed_json"


class ForbiddenError(AppError):
    """The request is refused where it stands (wrong network, foreign origin); the code says why."""

    status_code = HTTP_403_FORBIDDEN
    code = "forbidden"


class UnsupportedMediaTypeError(AppError):
    """The body's `Content-Type` is not the one the route reads."""

    status_code = HTTP_415_UNSUPPORTED_MEDIA_TYPE
    code = "unsupported_media_type"


class MisdirectedRequestError(AppError):
    """The `Host` header names a server this one is not (DNS rebinding in local mode)."""

    status_code = HTTP_421_MISDIRECTED_REQUEST
    code = "invalid_host"


class HeadersTooLargeError(AppError):
    """The request headers together exceed `MAX_HEADER_BYTES`."""

    status_code = HTTP_431_REQUEST_HEADER_FIELDS_TOO_LARGE
    code = "headers_too_large"


class RateLimitedError(AppError):
    """The user already has as many requests of this kind running as allowed; `Retry-After` says when to try again."""

    status_code = HTTP_429_TOO_MANY_REQUESTS
    code = "rate_limited"

    def __init__(
        self, message: str, *, retry_after_seconds: int, details: dict[str, str | int | float] | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds
        self.headers = {"Retry-After": str(retry_after_seconds)}
        self.details = details


class UnavailableError(AppError):
    """A dependency (the database) cannot be reached."""

    status_code = HTTP_503_SERVICE_UNAVAILABLE
    code = "service_unavailable"


_CODES_BY_STATUS = {
    HTTP_400_BAD_REQUEST: "bad_request",
    HTTP_401_UNAUTHORIZED: "unauthorized",
    HTTP_404_NOT_FOUND: "not_found",
    HTTP_405_METHOD_NOT_ALLOWED: "method_not_allowed",
    HTTP_409_CONFLICT: "conflict",
    HTTP_413_REQUEST_ENTITY_TOO_LARGE: "payload_too_large",
    HTTP_415_UNSUPPORTED_MEDIA_TYPE: "unsupported_media_type",
    HTTP_421_MISDIRECTED_REQUEST: "invalid_host",
    HTTP_422_UNPROCESSABLE_ENTITY: "validation_error",
    HTTP_429_TOO_MANY_REQUESTS: "rate_limited",
    HTTP_503_SERVICE_UNAVAILABLE: "service_unavailable",
}


_MESSAGES_BY_STATUS = {
    HTTP_404_NOT_FOUND: "No such resource.",
    HTTP_405_METHOD_NOT_ALLOWED: "This method is not allowed here.",
    HTTP_413_REQUEST_ENTITY_TOO_LARGE: "The request body is too large.",
}


def message_for_status(status: int) -> str:
    """A generic, safe sentence for an error status whose own text we do not pass on."""
    if status >= HTTP_500_INTERNAL_SERVER_ERROR:
        unavailable = status == HTTP_503_SERVICE_UNAVAILABLE
        return "The service is unavailable." if unavailable else "An internal error occurred."
    return _MESSAGES_BY_STATUS.get(status, "The request is invalid.")


def code_for_status(status: int) -> str:
    """The error code our body uses for a status that no handler named more precisely (`bad_request` if unknown)."""
    if status >= HTTP_500_INTERNAL_SERVER_ERROR and status != HTTP_503_SERVICE_UNAVAILABLE:
        return "internal"
    return _CODES_BY_STATUS.get(status, "bad_request")


def error_body(
    code: str, message: str, details: dict[str, str | int | float] | None = None
) -> dict[str, dict[str, str | int | float]]:
    """Build the one error body shape the API uses.

    Args:
        code: A stable, machine-readable code such as `not_found`.
        message: A short human-readable sentence, safe to show to the user.
        details: More fields for the inner object, if any.

    Returns:
        `{"error": {"code": code, "message": message, "request_id": ...}}`; the id is the request's (the one in its
        `X-Request-ID` response header and its log lines), left out outside of a request.
    """
    inner: dict[str, str | int | float] = {"code": code, "message": message, **(details or {})}
    rid = request_ids.current()
    if rid is not None:
        inner["request_id"] = rid
    return {"error": inner}


def error_response(
    status_code: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    details: dict[str, str | int | float] | None = None,
) -> Response[dict[str, Any]]:
    """Build a JSON error response."""
    return Response(
        error_body(code, message, details), status_code=status_code, media_type=MediaType.JSON, headers=headers or {}
    )


def _describe_validation(exc: ValidationException) -> str:
    problems = exc.extra if isinstance(exc.extra, list) else []
    parts = []
    for problem in problems:
        if isinstance(problem, dict):
            key = problem.get("key")
            message = str(problem.get("message", "is invalid"))
            parts.append(f"{key}: {message}" if key else message)
    return "; ".join(parts) or "the request is invalid"


def _body_missing(exc: ValidationException) -> bool:
    """Litestar reports an absent body as a validation error of its internal `data` parameter."""
    problems = exc.extra if isinstance(exc.extra, list) else []
    return any(isinstance(p, dict) and p.get("source") == "body" and p.get("key") == "data" for p in problems)


def _unauthorized_message(exc: NotAuthorizedException) -> tuple[str, str]:
    cause = exc.__cause__
    name = type(cause).__name__ if cause is not None else ""
    if name == "ExpiredSignatureError":
        return "token_expired", "The token has expired."
    if name in {"InvalidAudienceError", "InvalidIssuerError"}:
        return "unauthorized", "The token was issued for another audience or issuer."
    if name == "InvalidSignatureError":
        return "unauthorized", "The token signature is invalid."
    if isinstance(cause, KeyError):
        return "unauthorized", f"The token lacks the {cause.args[0]!r} claim."
    detail = exc.detail if exc.detail and exc.detail != "Unauthorized" else "Authentication is required."
    return "unauthorized", detail


def app_error_handler(_: Request[Any, Any, Any], exc: AppError) -> Response[dict[str, Any]]:
    """Map a service error to its status and code (with its extra fields and headers, if any)."""
    return error_response(exc.status_code, exc.code, exc.message, headers=exc.headers, details=exc.details)


def unauthorized_handler(_: Request[Any, Any, Any], exc: NotAuthorizedException) -> Response[dict[str, Any]]:
    """401 with the reason, and the header that tells a client to send a bearer token."""
    code, message = _unauthorized_message(exc)
    # RFC 6750 3.1: no error code when the request carried no credentials at all.
    challenge = "Bearer" if message == NO_CREDENTIALS else 'Bearer error="invalid_token"'
    if code == "token_expired":
        challenge += ', error_description="The token has expired"'  # the client should refresh it and retry
    return error_response(HTTP_401_UNAUTHORIZED, code, message, headers={"WWW-Authenticate": challenge})


CLIENT_DISCONNECTED_DETAIL = "client disconnected prematurely"
"""What Litestar's `Request.stream()` raises (as a 500 `InternalServerException`) when the client leaves mid-body."""


def is_client_abort(exc: HTTPException) -> bool:
    """Tell the client's disconnect while its body was read from a server fault.

    Pinned in tests/files/test_files_api.py.
    """
    return isinstance(exc, InternalServerException) and exc.detail == CLIENT_DISCONNECTED_DETAIL


def http_error_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    """Map Litestar's own errors (routing, body size, parsing, validation) to our body shape."""
    status = exc.status_code
    if isinstance(exc, ValidationException) and _body_missing(exc):
        return error_response(HTTP_400_BAD_REQUEST, "malformed_json", MALFORMED_JSON)
    if isinstance(exc, ValidationException) and status == HTTP_400_BAD_REQUEST and exc.extra:
        return error_response(HTTP_422_UNPROCESSABLE_ENTITY, "validation_error", _describe_validation(exc))
    if status == HTTP_400_BAD_REQUEST and isinstance(exc.__cause__, SerializationException):
        return error_response(status, "malformed_json", MALFORMED_JSON)
    if is_client_abort(exc):
        # Nobody reads this answer; the server did nothing wrong (a closed tab, a dropped network mid-upload).
        log.info("client aborted the request while sending its body: %s %s", request.method, request.url.path)
        return error_response(HTTP_400_BAD_REQUEST, "client_aborted", "The client disconnected.")
    if status >= HTTP_500_INTERNAL_SERVER_ERROR:
        log.error("internal error: %s", type(exc).__name__, exc_info=exc)
        return error_response(HTTP_500_INTERNAL_SERVER_ERROR, "internal", "An internal error occurred.")
    message = _MESSAGES_BY_STATUS.get(status) or exc.detail or "The request is invalid."
    # Keep Litestar's headers: a 405 must say which methods are allowed (`Allow`, RFC 9110).
    return error_response(status, code_for_status(status), message, headers=exc.headers)


def database_error_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """A dropped, unreachable, overloaded or locked database is a 503, never a hang or a stack trace."""
    if not is_database_unavailable(exc):
        if not isinstance(exc, DBAPIError):
            return internal_error_handler(_, exc)
        # The driver's message can quote row values (PostgreSQL's "DETAIL: Failing row contains (...)"), so log
        # where it happened and the SQLSTATE, never the text (statement parameters are hidden by the engine).
        log.error(
            "database error %s (SQLSTATE %s) at:\n%s",
            type(exc.orig).__name__,
            getattr(exc.orig, "sqlstate", None) or "unknown",
            "".join(traceback.format_tb(exc.__traceback__)).rstrip(),
        )
        return error_response(HTTP_500_INTERNAL_SERVER_ERROR, "internal", "An internal error occurred.")
    if isinstance(exc, PoolTimeoutError):
        from backend.metrics import DB_POOL_TIMEOUTS

        DB_POOL_TIMEOUTS.inc()
    log.warning("database unavailable: %s", type(getattr(exc, "orig", None) or exc.__cause__ or exc).__name__)
    return error_response(HTTP_503_SERVICE_UNAVAILABLE, "database_unavailable", DATABASE_UNAVAILABLE)


def is_database_unavailable(exc: BaseException) -> bool:
    """Tell an outage or a timeout of the database from a bug in a query.

    Unavailable means: no free pooled connection in time (SQLAlchemy's pool `TimeoutError`), a lost or refused
    connection (also as a bare `OSError` or `TimeoutError` from the network), or any DB-API
    `OperationalError`/`InterfaceError`. The latter covers psycopg's `ConnectionTimeout`, `QueryCanceled`
    (`statement_timeout`) and `LockNotAvailable` (`lock_timeout`), and SQLite's `database is locked`. Integrity, data
    and programming errors are bugs (500). This is the one classifier: the HTTP answer (503) and the store's retries
    of transient failures (`backend.chat.store.rows.retrying`) both use it.

    Args:
        exc: The exception a handler caught.

    Returns:
        True when the right answer is 503 `database_unavailable`.
    """
    if isinstance(exc, PoolTimeoutError | SAOperationalError | SAInterfaceError | OSError | TimeoutError):
        return True
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or isinstance(exc.orig, DBAPIOperationalError | DBAPIInterfaceError)
    return isinstance(exc, DBAPIOperationalError | DBAPIInterfaceError)


def data_error_handler(_: Request[Any, Any, Any], exc: DataError) -> Response[dict[str, Any]]:
    """A value the database cannot store (PostgreSQL rejects NUL characters in text, for one) is the client's 422."""
    log.info("database rejected a value: %s", type(exc.orig).__name__)
    return error_response(HTTP_422_UNPROCESSABLE_ENTITY, "validation_error", "A value cannot be stored as given.")


def internal_error_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """Anything unexpected: log it with its traceback, answer 500 with no internal text."""
    log.error("unhandled error", exc_info=exc)
    return error_response(HTTP_500_INTERNAL_SERVER_ERROR, "internal", "An internal error occurred.")


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    AppError: app_error_handler,
    NotAuthorizedException: unauthorized_handler,
    HTTPException: http_error_handler,
    DataError: data_error_handler,
    DBAPIError: database_error_handler,
    PoolTimeoutError: database_error_handler,
    DBAPIOperationalError: database_error_handler,
    Exception: internal_error_handler,
}
