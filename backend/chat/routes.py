"""`POST /chatkit` (start a turn and stream it) and `GET /chatkit/{message_id}/stream` (rejoin a turn)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Annotated

import anyio
import msgspec
from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter
from sse_starlette import EventSourceResponse

from backend.auth import User
from backend.chat import tickets
from backend.chat.schemas import ChatRequest
from backend.chat.service import ChatService, Subscription

# Stop proxies from buffering or compressing the stream (nginx honours X-Accel-Buffering).
STREAM_HEADERS = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}
SEND_TIMEOUT_SECONDS = 30.0
SHUTDOWN_GRACE_SECONDS = 5.0
MAX_EVENT_ID = 2**31 - 1

LastEventId = Annotated[
    int | None,
    HeaderParameter(name="Last-Event-ID", ge=0, le=MAX_EVENT_ID, description="Resume after this event id (SSE)."),
]
After = Annotated[
    int | None,
    QueryParameter(
        name="after",
        ge=0,
        le=MAX_EVENT_ID,
        description="Resume after this event id (for clients that cannot set headers).",
    ),
]


StreamTicket = Annotated[
    str | None,
    QueryParameter(
        name="ticket",
        max_length=100,
        description="A stream ticket from `POST /chatkit/{message_id}/ticket`, in place of the bearer token (JWT mode, "
        "for a browser `EventSource`). Single use, valid for a minute.",
    ),
]


class TicketPublic(msgspec.Struct):
    """A stream ticket: pass it as `?ticket=` to `GET /chatkit/{message_id}/stream` within `expires_in` seconds."""

    ticket: str
    expires_in: int


def provide_chat_service(state: State) -> ChatService:
    """Dependency: the app's chat service."""
    service: ChatService = state.chat_service
    return service


def event_stream(chat_service: ChatService, subscription: Subscription) -> EventSourceResponse:
    """The SSE response of a subscription, with keep-alives, proxy headers and shutdown handling."""
    return sse_response(chat_service, lambda shutdown: chat_service.stream(subscription, shutdown))


def sse_response(
    chat_service: ChatService,
    frames: Callable[[anyio.Event], AsyncIterator[bytes]],
    headers: Mapping[str, str] | None = None,
) -> EventSourceResponse:
    """An SSE response of pre-encoded frames (any protocol's), with keep-alives, proxy headers and shutdown handling.

    Args:
        chat_service: The chat service (its settings give the keep-alive interval).
        frames: Makes the frames, given the event set when the server shuts down.
        headers: Response headers to add to `STREAM_HEADERS`.
    """
    shutdown = anyio.Event()
    return EventSourceResponse(
        frames(shutdown),
        headers={**STREAM_HEADERS, **(headers or {})},
        sep="\n",  # keep-alive comments framed like our data frames (sse-starlette defaults to CRLF)
        ping=chat_service.settings.keepalive_seconds,
        send_timeout=SEND_TIMEOUT_SECONDS,
        shutdown_event=shutdown,
        shutdown_grace_period=SHUTDOWN_GRACE_SECONDS,
    )


class ChatController(Controller):
    """The chat endpoint a ChatKit-style frontend posts to."""

    path = "/chatkit"
    tags = ["chat"]
    dependencies = {"chat_service": Provide(provide_chat_service, sync_to_thread=False)}

    @post("/", operation_id="Chat", media_type="text/event-stream", status_code=200)
    async def chat(
        self,
        user: NamedDependency[User],
        chat_service: NamedDependency[ChatService],
        data: JSONBody[ChatRequest],
    ) -> EventSourceResponse:
        """Send a message and stream the reply: `start`, `text`/`thinking`/`tool_call`/`tool_result`, `done`."""
        subscription = await chat_service.execute(user.id, data.to_command())
        return event_stream(chat_service, subscription)

    @get("/{message_id:uuid}/stream", operation_id="RejoinTurn", media_type="text/event-stream")
    async def rejoin(
        self,
        user: NamedDependency[User],
        chat_service: NamedDependency[ChatService],
        message_id: FromPath[uuid.UUID],
        last_event_id: LastEventId = None,
        after: After = None,
        ticket: StreamTicket = None,
    ) -> EventSourceResponse:
        """Replay an assistant message's turn after `Last-Event-ID` (or `?after=`), then follow it live to `done`."""
        start_after = last_event_id if last_event_id is not None else after or 0
        subscription = await chat_service.rejoin(user.id, message_id, start_after)
        return event_stream(chat_service, subscription)

    @post("/{message_id:uuid}/ticket", operation_id="MintStreamTicket", status_code=200)
    async def ticket(
        self, user: NamedDependency[User], chat_service: NamedDependency[ChatService], message_id: FromPath[uuid.UUID]
    ) -> TicketPublic:
        """A short-lived, single-use ticket to rejoin this message's stream without an `Authorization` header."""
        await chat_service.rejoin(user.id, message_id, 0)  # yours, or 404
        minted = await tickets.mint(chat_service.database, user.id, message_id)
        return TicketPublic(ticket=minted.ticket, expires_in=minted.expires_in)
