"""`POST /api/chatkit` (the path is the `CHATKIT_PATH` setting): every ChatKit request, streamed or answered as JSON.

Handlers parse the request (`requests`), call a service (the chat service for a turn, `ConversationAccess` and
`FileAccess` for the rest), and encode the answer (`encoder` for streams, `items` for threads and items). Every error
on this path has ChatKit's `error` shape (with our `{"error": {code, message}}` inside) and a 4xx, or 503 for a
database outage; see CHATKIT.md.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from datetime import datetime
from typing import Any

import anyio
import msgspec
from litestar import Controller, Request, Response, Router, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody
from starlette.responses import Response as StarletteResponse

from backend.auth import User
from backend.chat.commands import AnswerPause, Approved, WidgetAction
from backend.chat.events import ClientToolCall
from backend.chat.events import Widget as WidgetEvent
from backend.chat.routes import provide_chat_service
from backend.chat.service import ChatService, Subscription
from backend.conversations.access import ConversationAccess
from backend.errors import EXCEPTION_HANDLERS, AppError, ConflictError, InvalidInputError, NotFoundError
from backend.files.access import FileAccess
from backend.protocols.chatkit import items, requests
from backend.protocols.chatkit.encoder import Encoder, UserTurn
from backend.protocols.chatkit.items import Json
from backend.protocols.chatkit.requests import Envelope
from backend.protocols.stream import event_stream
from backend.settings import Settings

log = logging.getLogger(__name__)

PAGE_SIZE = 20  # ChatKitServer's DEFAULT_PAGE_SIZE
MAX_THREAD_MESSAGES = 2000  # the messages a thread's items are read from
_json = msgspec.json.Encoder()


class UnsupportedRequestError(AppError):
    """A ChatKit request type this server does not handle."""

    code = "unsupported_request"


def provide_conversation_access(state: State) -> ConversationAccess:
    """Dependency: the app's conversation access."""
    access: ConversationAccess = state.conversation_access
    return access


def provide_file_access(state: State) -> FileAccess:
    """Dependency: the app's file access."""
    access: FileAccess = state.file_access
    return access


def chatkit_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Any error on this path: ChatKit's `error` event shape, our error object inside, the same status as elsewhere."""
    handler = next(
        (EXCEPTION_HANDLERS[kind] for kind in type(exc).__mro__ if kind in EXCEPTION_HANDLERS),
        EXCEPTION_HANDLERS[Exception],
    )
    answer: Response[Any] = handler(request, exc)
    content = answer.content if isinstance(answer.content, dict) else {}
    inner = content.get("error")
    error: dict[str, Any] = inner if isinstance(inner, dict) else {}
    body = {
        "type": "error",
        "code": "custom",
        "message": str(error.get("message") or "The request failed."),
        "allow_retry": answer.status_code in (429, 503),
        "error": error,
    }
    return Response(body, status_code=answer.status_code, headers=dict(answer.headers), media_type="application/json")


def _json_answer(body: Json) -> StarletteResponse:
    return StarletteResponse(_json.encode(body), media_type="application/json")


def _thread_json(conversation_id: uuid.UUID, title: str, created_at: datetime, page: Json | None = None) -> Json:
    return items.thread_json(str(conversation_id), title, items.timestamp(created_at), page)


def _page(data: list[Json], limit: int) -> Json:
    shown = data[:limit]
    page: Json = {"data": shown, "has_more": len(data) > limit}
    if shown:
        page["after"] = shown[-1]["id"]
    return page


class ChatKitController(Controller):
    """OpenAI ChatKit's wire: one POST for every request type."""

    path = "/"
    tags = ["chatkit"]
    dependencies = {
        "chat_service": Provide(provide_chat_service, sync_to_thread=False),
        "conversations": Provide(provide_conversation_access, sync_to_thread=False),
        "files": Provide(provide_file_access, sync_to_thread=False),
    }
    exception_handlers = dict.fromkeys(EXCEPTION_HANDLERS, chatkit_error)  # every key, so none of the app's wins

    @post("/", operation_id="ChatKit", status_code=200)
    async def chatkit(
        self,
        request: Request[Any, Any, Any],
        user: NamedDependency[User],
        chat_service: NamedDependency[ChatService],
        conversations: NamedDependency[ConversationAccess],
        files: NamedDependency[FileAccess],
        data: JSONBody[Envelope],
    ) -> StarletteResponse:
        """A ChatKit request: `threads.create` and friends stream `ThreadStreamEvent`s, the others answer JSON."""
        base_url = str(request.base_url).rstrip("/")
        if data.type in requests.UNSUPPORTED:
            raise UnsupportedRequestError(requests.UNSUPPORTED[data.type])
        if data.type in requests.STREAMING:
            subscription, encoder = await self._start(user.id, data, chat_service, files, base_url)
            return event_stream(chat_service, subscription, encoder)
        if data.type in requests.JSON_ANSWERED:
            return _json_answer(await self._answer(user.id, data, chat_service, conversations, files, base_url))
        raise UnsupportedRequestError(f"Unknown ChatKit request type {data.type!r}.")

    async def _start(
        self, user_id: str, data: Envelope, chat_service: ChatService, files: FileAccess, base_url: str
    ) -> tuple[Subscription, Encoder]:
        if data.type in ("threads.create", "threads.add_user_message"):
            params: requests.CreateParams | requests.AddUserMessageParams = (
                requests.parse(data, requests.CreateParams)
                if data.type == "threads.create"
                else requests.parse(data, requests.AddUserMessageParams)
            )
            message = requests.send(params)
            stored = await files.describe(user_id, message.attachments)
            attachments = [items.attachment_json(f.id, f.name, f.content_type, base_url) for f in stored]
            subscription = await chat_service.execute(user_id, message)
            user = UserTurn(message.text, attachments, new_thread=data.type == "threads.create")
            message_id = str(subscription.user_message_id) if subscription.user_message_id else None
            return subscription, Encoder(user=user, user_message_id=message_id)
        if data.type == "threads.add_client_tool_output":
            output = requests.parse(data, requests.ClientToolOutputParams)
            asks = await chat_service.waiting(user_id, requests.thread_of(output.thread_id))
            call = next((ask for ask in asks if isinstance(ask, ClientToolCall)), None)
            if call is None:
                raise ConflictError("The thread waits for no client tool output.", code="nothing_pending")
            subscription = await chat_service.execute(user_id, requests.client_output(output, call.id))
            return _resumed(subscription, {})
        if data.type == "threads.retry_after_item":
            retry = requests.parse(data, requests.RetryParams)
            return await chat_service.execute(user_id, requests.retry(retry)), Encoder()
        action = requests.parse(data, requests.CustomActionParams)
        command = requests.custom_action(action)
        subscription = await chat_service.execute(user_id, command)
        if isinstance(command, AnswerPause):
            verdicts = {d.id: "approved" if isinstance(d, Approved) else "rejected" for d in command.approvals}
            return _resumed(subscription, verdicts)
        return subscription, Encoder(action=True, sender_item=action.item_id)

    async def _answer(
        self,
        user_id: str,
        data: Envelope,
        chat_service: ChatService,
        conversations: ConversationAccess,
        files: FileAccess,
        base_url: str,
    ) -> Json:
        if data.type == "threads.get_by_id":
            thread_id = requests.thread_of(requests.parse(data, requests.ThreadParams).thread_id)
            detail = await conversations.detail(user_id, thread_id, max_messages=MAX_THREAD_MESSAGES)
            every = [i for m in detail.messages for i in items.items_of(m, str(detail.id), base_url)]
            return _thread_json(detail.id, detail.title, detail.created_at, _page(every, PAGE_SIZE))
        if data.type == "threads.list":
            listing = requests.parse(data, requests.PageParams)
            page, cursor = await conversations.page(user_id, limit=listing.limit or PAGE_SIZE, cursor=listing.after)
            threads = [_thread_json(c.id, c.title, c.created_at) for c in page]
            answer: Json = {"data": threads, "has_more": cursor is not None}
            if cursor is not None:
                answer["after"] = cursor
            return answer
        if data.type == "threads.update":
            update = requests.parse(data, requests.UpdateParams)
            renamed = await conversations.rename(user_id, requests.thread_of(update.thread_id), update.title)
            return _thread_json(renamed.id, renamed.title, renamed.created_at)
        if data.type == "threads.delete":
            await conversations.delete(
                user_id, requests.thread_of(requests.parse(data, requests.ThreadParams).thread_id)
            )
            return {}
        if data.type == "items.list":
            return await _items_page(user_id, requests.parse(data, requests.ItemsPageParams), conversations, base_url)
        if data.type == "items.feedback":
            feedback = requests.parse(data, requests.FeedbackParams)
            messages = [items.message_of(item) for item in feedback.item_ids]
            if any(message is None for message in messages):
                raise NotFoundError("Item not found.")
            await conversations.rate(
                user_id,
                requests.thread_of(feedback.thread_id),
                [m for m in messages if m is not None],
                "up" if feedback.kind == "positive" else "down",
            )
            return {}
        if data.type == "attachments.create":
            return _attachment(requests.parse(data, requests.AttachmentCreateParams), files, base_url)
        if data.type == "attachments.delete":
            deleted = requests.parse(data, requests.AttachmentDeleteParams)
            await files.delete(user_id, _file_id(deleted.attachment_id))
            return {}
        return await _sync_action(user_id, requests.parse(data, requests.CustomActionParams), chat_service)


def _resumed(subscription: Subscription, verdicts: dict[str, str]) -> tuple[Subscription, Encoder]:
    """A paused reply that continues: replay its earlier segments silently (to know its items), then stream."""
    return dataclasses.replace(subscription, after=0), Encoder(replay_until=subscription.after, decisions=verdicts)


def _file_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFoundError("File not found.") from None


async def _items_page(
    user_id: str, params: requests.ItemsPageParams, conversations: ConversationAccess, base_url: str
) -> Json:
    detail = await conversations.detail(user_id, requests.thread_of(params.thread_id), max_messages=MAX_THREAD_MESSAGES)
    every = [i for m in detail.messages for i in items.items_of(m, str(detail.id), base_url)]
    if params.order == "desc":
        every.reverse()
    if params.after is not None:
        ids = [item["id"] for item in every]
        if params.after not in ids:
            raise InvalidInputError("params.after: no such item in this thread")
        every = every[ids.index(params.after) + 1 :]
    return _page(every, params.limit or PAGE_SIZE)


def _attachment(params: requests.AttachmentCreateParams, files: FileAccess, base_url: str) -> Json:
    """The first phase of a two-phase upload: an id and where to send the bytes (`POST /api/files?id=`)."""
    file_id = files.plan_upload(params.size)
    attachment = items.attachment_json(file_id, params.name, params.mime_type, base_url)
    attachment["upload_descriptor"] = {"url": f"{base_url}/api/files?id={file_id}", "method": "POST", "headers": {}}
    return attachment


async def _sync_action(user_id: str, params: requests.CustomActionParams, chat_service: ChatService) -> Json:
    """`threads.sync_custom_action`: run a widget action and answer the sender item as it is now."""
    if requests.is_approval(params):
        raise InvalidInputError("An approval continues the reply: send it as threads.custom_action.")
    command = requests.custom_action(params)
    assert isinstance(command, WidgetAction)
    subscription = await chat_service.execute(user_id, command)
    widget: dict[str, Any] | None = None
    async for _event_id, event in chat_service.events(subscription, anyio.Event()):
        if isinstance(event, WidgetEvent) and widget is None:
            widget = event.widget
    if widget is None or params.item_id is None:
        return {}
    return {"updated_item": items.widget_item(params.item_id, params.thread_id, items.timestamp(), widget)}


def chatkit_router(settings: Settings) -> Router:
    """Mount `ChatKitController` at `CHATKIT_PATH`."""
    return Router(path=settings.chatkit_path, route_handlers=[ChatKitController])
