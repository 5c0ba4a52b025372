"""`POST {AGUI_PATH}` (default `/api/agui`, AG-UI's `HttpAgent` url) and `GET {AGUI_PATH}/{threadId}/stream` (rejoin).

Handlers parse the request into an engine command (`requests`), call the chat service, and encode its events
(`encoder`); see AGUI.md.
"""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Router, get, post
from litestar.di import NamedDependency, Provide
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_204_NO_CONTENT
from sse_starlette import EventSourceResponse
from starlette.responses import Response as StarletteResponse

from backend.auth import User
from backend.chat.routes import LastEventId, provide_chat_service
from backend.chat.service import ChatService
from backend.protocols.agui.encoder import Encoder
from backend.protocols.agui.requests import RunAgentInput
from backend.protocols.ids import checked_chat_id, conversation_id_of
from backend.protocols.stream import event_stream
from backend.settings import Settings

RunId = Annotated[
    str | None,
    QueryParameter(
        name="runId", max_length=200, description="The run id to echo in RUN_STARTED (default: our message id)."
    ),
]


class AguiController(Controller):
    """AG-UI's endpoints (mounted at `AGUI_PATH` by `agui_router`)."""

    path = "/"
    tags = ["ag-ui"]
    dependencies = {"chat_service": Provide(provide_chat_service, sync_to_thread=False)}

    @post("/", operation_id="AguiRun", media_type="text/event-stream", status_code=200)
    async def run(
        self, user: NamedDependency[User], chat_service: NamedDependency[ChatService], data: JSONBody[RunAgentInput]
    ) -> EventSourceResponse:
        """Run the agent on a thread (a new message, answers to interrupts, or tool results); stream AG-UI events."""
        subscription = await chat_service.execute(user.id, data.to_command(user.id))
        return event_stream(chat_service, subscription, Encoder(data.thread_id, data.run_id))

    @get(
        "/{thread_id:str}/stream",
        operation_id="AguiRejoin",
        media_type="text/event-stream",
        responses={204: ResponseSpec(data_container=None, description="Nothing runs in this thread.")},
    )
    async def rejoin(
        self,
        user: NamedDependency[User],
        chat_service: NamedDependency[ChatService],
        thread_id: FromPath[str],
        run_id: RunId = None,
        last_event_id: LastEventId = None,
    ) -> StarletteResponse:
        """Replay the thread's running reply from its start (or after `Last-Event-ID`) and follow it; 204 if none."""
        after = last_event_id or 0
        conversation_id = conversation_id_of(user.id, checked_chat_id(thread_id))
        subscription = await chat_service.running(user.id, conversation_id, after)
        if subscription is None:
            return StarletteResponse(status_code=HTTP_204_NO_CONTENT)
        message_id = str(subscription.message_id)
        return event_stream(chat_service, subscription, Encoder(thread_id, run_id or message_id, message_id))


def agui_router(settings: Settings) -> Router:
    """Mount the AG-UI endpoints at `AGUI_PATH`."""
    return Router(path=settings.agui_path, route_handlers=[AguiController])
