"""Request ids: one per HTTP request, in its response header, its error bodies and every log line it causes.

The id comes from the client's `X-Request-ID` header when it is well-formed (1-128 characters of letters, digits and
`-_.:`), else it is generated (32 hex digits). It lives in a context variable: an `asyncio` task copies the context
it is created in, so a turn's background task (and anything it starts) logs with the id of the request that began
it. Code that logs about a turn from elsewhere (the event-log writer) binds the id it kept (`bound`). Every log record
gets it as its `request_id` attribute (`install_log_records`), whichever handler formats it.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "x-request-id"
_HEADER_BYTES = HEADER.encode()
_WELL_FORMED = re.compile(r"[A-Za-z0-9._:\-]{1,128}")

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
"""The id of the request this code runs for (None outside of any request)."""


def current() -> str | None:
    """The id of the request this code runs for, if any."""
    return request_id.get()


def accepted(value: bytes | None) -> str:
    """The client's id if it is well-formed, else a new one."""
    if value is not None:
        text = value.decode("latin-1")
        if _WELL_FORMED.fullmatch(text):
            return text
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Pure ASGI middleware, outermost: set the request's id and return it in the `X-Request-ID` response header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request with its id in the context, and add the header to its response."""
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        given = next((value for name, value in scope["headers"] if name == _HEADER_BYTES), None)
        rid = accepted(given)
        token = request_id.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableScopeHeaders.from_message(message)[HEADER] = rid
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)


@contextmanager
def bound(rid: str | None) -> Iterator[None]:
    """Run a block (a log call about a turn, from a task of no request) with `rid` as the current request id."""
    token = request_id.set(rid)
    try:
        yield
    finally:
        request_id.reset(token)


def install_log_records() -> None:
    """Give every log record of this process a `request_id` attribute (the current id, else `-`); idempotent."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "adds_request_id", False):
        return

    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        record.request_id = request_id.get() or "-"
        return record

    make.adds_request_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(make)
