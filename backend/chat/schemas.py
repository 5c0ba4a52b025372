"""Native request bodies: `POST /chatkit` (a message, an action, or answers to a pause) and a regeneration."""

from __future__ import annotations

import json
import uuid

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

from backend.chat.commands import (
    AnswerPause,
    ClientResult,
    Command,
    Regenerate,
    SendMessage,
    WidgetAction,
    decision,
)
from backend.chat.widgets import Action
from backend.errors import NotFoundError

MAX_CLIENT_RESULT_BYTES = 16 * 1024
MAX_ANSWERS = 20
MAX_ATTACHMENTS_FIELD = 100  # the configured per-message limit (FILES_PER_MESSAGE_MAX) is checked by the service


class ApprovalDecision(BaseModel):
    """The user's answer to an `approval_request`."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=128, description="The `approval_request` id.")
    approve: bool = Field(description="true to run the tool, false to refuse it (JSON booleans only).")
    reason: str | None = Field(default=None, max_length=500, description="Why it was rejected; the model sees it.")

    @field_validator("approve", mode="before")
    @classmethod
    def _json_boolean(cls, value: object) -> object:
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value


class ClientToolResult(BaseModel):
    """The browser's result of a `client_tool_call`."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=128, description="The `client_tool_call` id.")
    result: JsonValue = Field(description=f"Any JSON, at most {MAX_CLIENT_RESULT_BYTES} bytes.")

    @field_validator("result")
    @classmethod
    def _bounded(cls, value: JsonValue) -> JsonValue:
        if len(json.dumps(value, ensure_ascii=False).encode()) > MAX_CLIENT_RESULT_BYTES:
            raise ValueError(f"must be at most {MAX_CLIENT_RESULT_BYTES} bytes as JSON")
        return value


class ChatRequest(BaseModel):
    """One request to `POST /chatkit`.

    Exactly one of: a user `message` (to `thread_id`, alias `conversation_id`, or a new conversation), a widget
    `action`, or the `approvals` / `client_tool_results` a paused reply in `thread_id` waits for. Unknown fields are
    refused (422 naming them): a misspelt `threadId` must not silently start a new conversation.
    """

    model_config = ConfigDict(extra="forbid")

    message: str | None = Field(
        default=None, min_length=1, description="The user's message; surrounding whitespace is trimmed."
    )
    thread_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices("thread_id", "conversation_id"),
        description="The conversation to continue; omit to start a new one. Alias: `conversation_id`.",
    )
    client_message_id: uuid.UUID | None = Field(
        default=None,
        description=(
            "A UUID the client generates per message. A repeat with the same id (a network retry) never starts a "
            "second turn: it replays and follows the turn the first request started. Scoped to the user."
        ),
    )
    attachments: list[uuid.UUID] = Field(
        default_factory=list,
        max_length=MAX_ATTACHMENTS_FIELD,
        description="Ids of uploaded files (`POST /api/files`) to send with the message (a repeated id counts once). "
        "A message may be attachments alone, without `message`.",
    )
    edit_of: uuid.UUID | None = Field(
        default=None,
        description="With `message` and `thread_id`: the id of an earlier user message that this message is a new "
        "version of. It becomes that message's sibling (the same parent) and the active branch; the reply follows it. "
        "Everything after the old version stays stored (switch back with `PUT /api/conversations/{id}/branch`).",
    )
    action: Action | None = Field(default=None, description="A widget action (a Button or Checkbox was used).")
    approvals: list[ApprovalDecision] | None = Field(
        default=None, max_length=MAX_ANSWERS, description="Decisions on the pending tool approvals."
    )
    client_tool_results: list[ClientToolResult] | None = Field(
        default=None, max_length=MAX_ANSWERS, description="Results of the pending client-side tools."
    )

    @field_validator("approvals", "client_tool_results")
    @classmethod
    def _one_answer_per_id(
        cls, answers: list[ApprovalDecision] | list[ClientToolResult] | None
    ) -> list[ApprovalDecision] | list[ClientToolResult] | None:
        seen: set[str] = set()
        for answer in answers or ():
            if answer.id in seen:
                raise ValueError(f"the id {answer.id!r} is answered more than once")
            seen.add(answer.id)
        return answers

    @field_validator("message", mode="before")
    @classmethod
    def _trim(cls, value: object) -> object:
        return value.strip() if isinstance(value, str) else value

    @field_validator("attachments")
    @classmethod
    def _once_each(cls, value: list[uuid.UUID]) -> list[uuid.UUID]:
        return list(dict.fromkeys(value))  # merged before FILES_PER_MESSAGE_MAX counts them; first position wins

    @model_validator(mode="after")
    def _one_kind(self) -> ChatRequest:
        answers = self.approvals is not None or self.client_tool_results is not None
        kinds = sum((self.message is not None or bool(self.attachments), self.action is not None, answers))
        if kinds != 1:
            raise ValueError(
                "send exactly one of: message (and/or attachments), action, or approvals/client_tool_results"
            )
        if (self.action is not None or answers or self.edit_of is not None) and self.thread_id is None:
            raise ValueError("thread_id is required with an action, approvals, client_tool_results or edit_of")
        if self.edit_of is not None and self.message is None and not self.attachments:
            raise ValueError("edit_of needs a message")
        if self.message is None and self.attachments:
            self.message = ""  # attachments alone are a message with no text
        return self

    def to_command(self) -> Command:
        """The engine command this body asks for (the native protocol's adapter).

        Raises:
            NotFoundError: `thread_id` is not a conversation id (so it cannot be the caller's).
        """
        conversation_id = _conversation_id(self.thread_id)
        if self.message is not None:
            return SendMessage(
                text=self.message,
                conversation_id=conversation_id,
                client_message_id=self.client_message_id,
                attachments=tuple(self.attachments),
                edit_of=self.edit_of,
            )
        assert conversation_id is not None  # checked by `_one_kind`
        if self.action is not None:
            return WidgetAction(conversation_id, self.action)
        return AnswerPause(
            conversation_id,
            approvals=tuple(decision(d.id, d.approve, d.reason) for d in self.approvals or ()),
            client_results=tuple(ClientResult(r.id, r.result) for r in self.client_tool_results or ()),
        )


def _conversation_id(reference: str | None) -> uuid.UUID | None:
    if reference is None:
        return None
    try:
        return uuid.UUID(reference)
    except ValueError:
        raise NotFoundError("Conversation not found.") from None


class RegenerateRequest(BaseModel):
    """Body of `POST /api/conversations/{id}/messages/{message_id}/regenerate`: `{}`, or an idempotency key."""

    model_config = ConfigDict(extra="forbid")

    client_message_id: uuid.UUID | None = Field(
        default=None,
        description="A UUID the client generates per regeneration: a repeat (a network retry) follows the reply the "
        "first request started instead of starting another. Scoped to the user, shared with `POST /chatkit`'s.",
    )

    def to_command(self, conversation_id: uuid.UUID, message_id: uuid.UUID) -> Regenerate:
        """The engine command: answer `message_id` (a user message) or its user message (a reply) again."""
        return Regenerate(conversation_id, message_id, self.client_message_id)
