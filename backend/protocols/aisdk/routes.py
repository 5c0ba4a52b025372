"""`POST /api/chat`, `GET /api/chat/{id}/stream` (resume) and `DELETE /api/chat/{id}/stream` (stop): the AI SDK's paths.

Handlers parse the request into an engine command (`requests`), call the chat service, and encode its events
(`encoder`). The client's `ai` major version comes in the `X-AI-SDK-Version` header (default 5, which every client
reads); see AISDK.md.
"""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, delete, get, post
from litestar.di import NamedDependency, Provide
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, HeaderParameter, JSONBody
from litestar.status_codes import HTTP_204_NO_CONTENT
from sse_starlette import EventSourceResponse
from starlette.responses import Response as StarletteResponse

from backend.auth import User
from backend.chat.routes import LastEventId, provide_chat_service
from backend.chat.service import ChatService
from backend.protocols.aisdk.encoder import HEADERS, Encoder, Version
from backend.protocols.aisdk.requests import ChatBody
from backend.protocols.ids import checked_chat_id, conversation_id_of
from backend.protocols.stream import event_stream

DEFAULT_VERSION: Version = 5
SdkVersion = Annotated[
    int | None,
    HeaderParameter(
        name="X-AI-SDK-Version",
        ge=5,
        le=7,
        description="The major version of the client's `ai` package (5, 6 or 7; default 5). Decides the chunk types.",
    ),
]


def _version(value: int | None) -> Version:
    return DEFAULT_VERSION if value is None else value  # type: ignore[return-value]


class AiSdkController(Controller):
    """The AI SDK's `DefaultChatTransport` endpoints."""

    path = "/api/chat"
    tags = ["ai-sdk"]
    dependencies = {"chat_service": Provide(provide_chat_service, sync_to_thread=False)}

    @post("/", operation_id="AiSdkChat", media_type="text/event-stream", status_code=200)
    async def chat(
        self,
        user: NamedDependency[User],
        chat_service: NamedDependency[ChatService],
        data: JSONBody[ChatBody],
        version: SdkVersion = None,
    ) -> EventSourceResponse:
        """Send a message, answer a paused reply, regenerate, or run a widget action; stream the reply."""
        subscription = await chat_service.execute(user.id, data.to_command(user.id))
        return event_stream(chat_service, subscription, Encoder(_version(version)), HEADERS)

    @get(
        "/{chat_id:str}/stream",
        operation_id="AiSdkResumeStream",
        media_type="text/event-stream",
        responses={204: ResponseSpec(data_container=None, description="Nothing runs in this chat.")},
    )
    async def resume(
        self,
        user: NamedDependency[User],
        chat_service: NamedDependency[ChatService],
        chat_id: FromPath[str],
        version: SdkVersion = None,
        last_event_id: LastEventId = None,
    ) -> StarletteResponse:
        """Replay the chat's running reply from its `start` (or after `Last-Event-ID`) and follow it; 204 if none."""
        after = last_event_id or 0
        conversation_id = conversation_id_of(user.id, checked_chat_id(chat_id))
        subscription = await chat_service.running(user.id, conversation_id, after)
        if subscription is None:
            return StarletteResponse(status_code=HTTP_204_NO_CONTENT)  # the client's `reconnectToStream` gives null
        return event_stream(chat_service, subscription, Encoder(_version(version), started=after > 0), HEADERS)

    @delete("/{chat_id:str}/stream", operation_id="AiSdkStopStream", status_code=HTTP_204_NO_CONTENT)
    async def stop(
        self, user: NamedDependency[User], chat_service: NamedDependency[ChatService], chat_id: FromPath[str]
    ) -> None:
        """Stop the chat's running reply for real (`useChat`'s `stop()` only aborts the fetch); idempotent."""
        await chat_service.stop(user.id, conversation_id_of(user.id, checked_chat_id(chat_id)))
