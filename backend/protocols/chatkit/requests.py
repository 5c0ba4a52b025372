"""ChatKit's request bodies (`openai-chatkit` 1.6.5, `chatkit.types`) and the engine commands they ask for.

Every request is `{"type": ..., "params": {...}, "metadata": {...}}`. The envelope is read first, then the `params` of
its type, so an unknown type gets its own clear error rather than a list of every union member. Fields this server
does not use are ignored (ChatKit adds some in newer versions); `metadata` is accepted and not stored.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StringConstraints, ValidationError

from backend.chat.commands import AnswerPause, ClientResult, Regenerate, SendMessage, WidgetAction, decision
from backend.chat.widgets import Action, WidgetError
from backend.errors import InvalidInputError, NotFoundError
from backend.protocols.chatkit.items import message_of
from backend.protocols.chatkit.widgets import APPROVAL_ACTIONS, APPROVE_ACTION

THREAD_NOT_FOUND = "Thread not found."
MAX_ID_CHARS = 200
MAX_ATTACHMENTS = 50
MAX_CONTENT_PARTS = 200
MAX_PAGE = 100
_P = TypeVar("_P", bound=BaseModel)
Id = Annotated[str, StringConstraints(max_length=MAX_ID_CHARS)]

STREAMING = (
    "threads.create",
    "threads.add_user_message",
    "threads.add_client_tool_output",
    "threads.retry_after_item",
    "threads.custom_action",
)
JSON_ANSWERED = (
    "threads.get_by_id",
    "threads.list",
    "threads.update",
    "threads.delete",
    "items.list",
    "items.feedback",
    "attachments.create",
    "attachments.delete",
    "threads.sync_custom_action",
)
UNSUPPORTED = {
    "input.transcribe": "Dictation (input.transcribe) is not supported by this server.",
    "threads.add_structured_input": "Structured input (threads.add_structured_input) is not supported by this server.",
}


class _Params(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Envelope(BaseModel):
    """Any ChatKit request: its type, its parameters (checked per type), its metadata."""

    model_config = ConfigDict(extra="ignore", title="ChatKitRequest")

    type: str = Field(
        min_length=1,
        max_length=100,
        description="Streamed: " + ", ".join(STREAMING) + ". Answered as JSON: " + ", ".join(JSON_ANSWERED) + ".",
    )
    params: dict[str, Any] = Field(default_factory=dict, description="The request's parameters, checked per type.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Accepted and not stored.")


class ContentPart(_Params):
    """`input_text`, or an `input_tag` (its text is sent as text)."""

    type: Literal["input_text", "input_tag"]
    text: str


class UserInput(_Params):
    """`UserMessageInput`: the composer's content, the ids of uploaded attachments, an optional quote."""

    content: list[ContentPart] = Field(max_length=MAX_CONTENT_PARTS)
    attachments: list[Id] = Field(default_factory=list, max_length=MAX_ATTACHMENTS)
    quoted_text: str | None = None

    def text(self) -> str:
        """The message as the model reads it: the quote (as a Markdown quote) and the content's text.

        Raises:
            InvalidInputError: No text at all.
        """
        text = "".join(part.text for part in self.content).strip()
        if not text:
            raise InvalidInputError("params.input.content: the message has no text")
        if self.quoted_text and self.quoted_text.strip():
            quote = "\n".join(f"> {line}" for line in self.quoted_text.strip().splitlines())
            return f"{quote}\n\n{text}"
        return text

    def attachment_ids(self) -> tuple[uuid.UUID, ...]:
        """The attachments as our file ids (an id we never gave out names no file: 404)."""
        ids: list[uuid.UUID] = []
        for value in self.attachments:
            try:
                ids.append(uuid.UUID(value))
            except ValueError:
                raise NotFoundError("File not found.") from None
        return tuple(ids)


class CreateParams(_Params):
    """`threads.create`."""

    input: UserInput


class AddUserMessageParams(_Params):
    """`threads.add_user_message`."""

    thread_id: Id
    input: UserInput


class ClientToolOutputParams(_Params):
    """`threads.add_client_tool_output`: the result of the client tool call the thread waits for."""

    thread_id: Id
    result: JsonValue = None


class RetryParams(_Params):
    """`threads.retry_after_item`: answer the user message `item_id` again."""

    thread_id: Id
    item_id: Id


class ActionBody(_Params):
    """A widget's `ActionConfig` as the client sends it back."""

    type: str = Field(min_length=1, max_length=100)
    payload: JsonValue = None


class CustomActionParams(_Params):
    """`threads.custom_action` and `threads.sync_custom_action`."""

    thread_id: Id
    item_id: Id | None = None
    action: ActionBody


class ThreadParams(_Params):
    """`threads.get_by_id`, `threads.delete`."""

    thread_id: Id


class UpdateParams(_Params):
    """`threads.update`."""

    thread_id: Id
    title: str = Field(max_length=1000)


class PageParams(_Params):
    """`threads.list`."""

    limit: int | None = Field(default=None, ge=1, le=MAX_PAGE)
    order: Literal["asc", "desc"] = "desc"
    after: str | None = Field(default=None, max_length=1000)


class ItemsPageParams(PageParams):
    """`items.list`."""

    thread_id: Id


class FeedbackParams(_Params):
    """`items.feedback`."""

    thread_id: Id
    item_ids: list[Id] = Field(min_length=1, max_length=MAX_PAGE)
    kind: Literal["positive", "negative"]


class AttachmentCreateParams(_Params):
    """`attachments.create`: the first phase of a two-phase upload."""

    name: str = Field(min_length=1, max_length=1000)
    size: int = Field(ge=0)
    mime_type: str = Field(min_length=1, max_length=200)


class AttachmentDeleteParams(_Params):
    """`attachments.delete`."""

    attachment_id: Id


def parse(envelope: Envelope, model: type[_P]) -> _P:
    """The request's `params` as `model`.

    Raises:
        InvalidInputError: They do not fit, with the first problem named.
    """
    try:
        return model.model_validate(envelope.params)
    except ValidationError as error:
        problem = error.errors(include_url=False)[0]
        where = ".".join(str(part) for part in problem["loc"])
        raise InvalidInputError(f"params{'.' + where if where else ''}: {problem['msg']}") from None


def thread_of(thread_id: str) -> uuid.UUID:
    """Our conversation id for a thread id (an id we never gave out is simply not found).

    Raises:
        NotFoundError: Not one of our ids.
    """
    try:
        return uuid.UUID(thread_id)
    except ValueError:
        raise NotFoundError(THREAD_NOT_FOUND) from None


def send(params: CreateParams | AddUserMessageParams) -> SendMessage:
    """A new thread's first message, or the next message of a thread."""
    conversation_id = thread_of(params.thread_id) if isinstance(params, AddUserMessageParams) else None
    return SendMessage(
        text=params.input.text(), conversation_id=conversation_id, attachments=params.input.attachment_ids()
    )


def client_output(params: ClientToolOutputParams, call_id: str) -> AnswerPause:
    """The browser's result for the client tool call `call_id` the thread waits for."""
    return AnswerPause(thread_of(params.thread_id), client_results=(ClientResult(call_id, params.result),))


def retry(params: RetryParams) -> Regenerate:
    """Answer the user message `item_id` again: a new reply, a version beside the earlier ones (which stay stored).

    Raises:
        NotFoundError: The item is not one of our messages.
    """
    message_id = message_of(params.item_id)
    if message_id is None:
        raise NotFoundError("Item not found.")
    return Regenerate(thread_of(params.thread_id), message_id)


def is_approval(params: CustomActionParams) -> bool:
    """An Approve or Reject of the approval card (see `widgets.approval_card`)."""
    return params.action.type in APPROVAL_ACTIONS


def custom_action(params: CustomActionParams) -> AnswerPause | WidgetAction:
    """An approval card's answer (every call it lists), or any other widget action (its registered handler).

    Raises:
        InvalidInputError: An action that is not one of ours (type, payload size), or an approval naming no call.
    """
    conversation_id = thread_of(params.thread_id)
    payload = params.action.payload
    if is_approval(params):
        ids = payload.get("ids") if isinstance(payload, dict) else None
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
            raise InvalidInputError("params.action.payload.ids: name the tool calls to approve or reject")
        approve = params.action.type == APPROVE_ACTION
        return AnswerPause(conversation_id, approvals=tuple(decision(str(i), approve) for i in ids))
    if payload is not None and not isinstance(payload, dict):
        raise InvalidInputError("params.action.payload: must be an object")
    try:
        action = Action(type=params.action.type, payload=payload or {})
    except (ValidationError, WidgetError) as error:
        message = error.errors(include_url=False)[0]["msg"] if isinstance(error, ValidationError) else str(error)
        raise InvalidInputError(f"params.action: {message}") from None
    return WidgetAction(conversation_id, action)
