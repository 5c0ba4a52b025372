"""`POST /chatkit`: validate, then stream the agent's reply as Server-Sent Events."""

from __future__ import annotations

import anyio
from litestar import Controller, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody
from sqlmodel.ext.asyncio.session import AsyncSession
from sse_starlette import EventSourceResponse
from starlette.background import BackgroundTask

from backend.auth import User
from backend.chat.schemas import ChatRequest
from backend.chat.service import ChatService

# Stop proxies from buffering or compressing the stream (nginx honours X-Accel-Buffering).
STREAM_HEADERS = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}
SEND_TIMEOUT_SECONDS = 30.0
SHUTDOWN_GRACE_SECONDS = 5.0


def provide_chat_service(state: State) -> ChatService:
    """Dependency: the app's chat service."""
    return state.chat_service


class ChatController(Controller):
    """The chat endpoint a ChatKit-style frontend posts to."""

    path = "/chatkit"
    tags = ["chat"]
    dependencies = {"chat_service": Provide(provide_chat_service, sync_to_thread=False)}

    @post("/", operation_id="Chat", media_type="text/event-stream", status_code=200)
    async def chat(
        self,
        db_session: NamedDependency[AsyncSession],
        user: NamedDependency[User],
        chat_service: NamedDependency[ChatService],
        data: JSONBody[ChatRequest],
    ) -> EventSourceResponse:
        """Send a message and stream the reply: `start`, `text`/`thinking`/`tool_call`/`tool_result`, `done`."""
        turn = await chat_service.start_turn(db_session, user.id, data.message, data.thread_id)
        shutdown = anyio.Event()
        return EventSourceResponse(
            chat_service.stream(turn, shutdown),
            headers=STREAM_HEADERS,
            sep="\n",  # keep-alive comments framed like our data frames (sse-starlette defaults to CRLF)
            ping=chat_service.settings.keepalive_seconds,
            send_timeout=SEND_TIMEOUT_SECONDS,
            background=BackgroundTask(chat_service.settle, turn),
            shutdown_event=shutdown,
            shutdown_grace_period=SHUTDOWN_GRACE_SECONDS,
        )
