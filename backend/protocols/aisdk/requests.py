"""The body `DefaultChatTransport` posts to `POST /api/chat`, and the engine command it asks for.

The server's stored history is the truth: of the messages a client sends, only the last one counts. A last message
from the user is a new message (its text and file parts); a last message from the assistant is the answer a paused
reply waits for (its tool parts in state `approval-responded`, or with an output the browser added); a
`regenerate-message` trigger answers a user message again (a new version of the reply); an `action` field is a
widget action.
"""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from backend.chat.commands import (
    AnswerPause,
    ClientResult,
    Command,
    Decision,
    Regenerate,
    SendMessage,
    Upload,
    WidgetAction,
    decision,
)
from backend.chat.widgets import Action
from backend.errors import InvalidInputError
from backend.protocols.files import add_file_url
from backend.protocols.ids import MAX_CHAT_ID_CHARS, client_message_id, conversation_id_of

# Chat ids: see `backend.protocols.ids` (shared with AG-UI's thread ids).
MAX_MESSAGES = 1000
MAX_PARTS = 200
MAX_REASON_CHARS = 500


class Approval(BaseModel):
    """The `approval` of a tool part (`addToolApprovalResponse`)."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(max_length=200)
    approved: bool | None = None
    reason: str | None = Field(default=None, max_length=MAX_REASON_CHARS)


class UIPart(BaseModel):
    """One part of a UI message; only the fields this server reads are checked, the rest is ignored."""

    model_config = ConfigDict(extra="ignore")

    type: str = Field(min_length=1, max_length=200)
    text: str | None = None
    url: str | None = None
    media_type: str | None = Field(default=None, alias="mediaType", max_length=200)
    filename: str | None = Field(default=None, max_length=255)
    tool_call_id: str | None = Field(default=None, alias="toolCallId", max_length=200)
    state: str | None = Field(default=None, max_length=50)
    output: JsonValue = None
    error_text: str | None = Field(default=None, alias="errorText")
    approval: Approval | None = None

    @property
    def is_tool(self) -> bool:
        """A tool part: `tool-<name>` or `dynamic-tool`."""
        return self.type.startswith("tool-") or self.type == "dynamic-tool"


class Message(BaseModel):
    """A `UIMessage`."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(max_length=200)
    role: Literal["system", "user", "assistant"]
    parts: list[UIPart] = Field(max_length=MAX_PARTS)


class ChatBody(BaseModel):
    """`{id, messages, trigger, messageId?}` plus the fields a client adds with `body` (here: `action`)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: str = Field(min_length=1, max_length=MAX_CHAT_ID_CHARS, description="The chat id (`useChat({id})`).")
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    trigger: Literal["submit-message", "regenerate-message"]
    message_id: str | None = Field(default=None, alias="messageId", max_length=200)
    action: Action | None = Field(default=None, description="A widget action (a Button or Checkbox was used).")

    @field_validator("id")
    @classmethod
    def _printable(cls, value: str) -> str:
        if not value.isprintable():
            raise ValueError("must be printable")
        return value

    def to_command(self, user_id: str) -> Command:
        """The engine command this body asks for, from the user `user_id`.

        Raises:
            InvalidInputError: A new user message with no text.
        """
        conversation_id = conversation_id_of(user_id, self.id)
        if self.action is not None:
            return WidgetAction(conversation_id, self.action)
        if self.trigger == "regenerate-message":
            return Regenerate(conversation_id, _uuid_or_nil(self.message_id))
        last = self.messages[-1]
        if last.role == "assistant":
            return _answers(conversation_id, last)
        if last.role != "user":
            raise InvalidInputError("messages: the last message must be the user's or the assistant's")
        text = "".join(p.text or "" for p in last.parts if p.type == "text").strip()
        if not text:
            raise InvalidInputError("messages: the last user message has no text")
        attachments: list[uuid.UUID] = []
        uploads: list[Upload] = []
        for part in last.parts:
            if part.type == "file":
                add_file_url(part.url or "", part.filename, attachments, uploads)
        return SendMessage(
            text=text,
            conversation_id=conversation_id,
            client_message_id=client_message_id(self.id, last.id),
            attachments=tuple(attachments),
            uploads=tuple(uploads),
            create_missing=True,
        )


def _uuid_or_nil(value: str | None) -> uuid.UUID | None:
    """A reply id to regenerate: None for "the last one"; an id that is not ours names nothing (the nil UUID)."""
    if value is None:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return uuid.UUID(int=1)  # matches no message: the engine answers 404


def _answers(conversation_id: uuid.UUID, message: Message) -> AnswerPause:
    """The approvals and client-tool results in an assistant message the client sends back.

    The whole message comes back, with the tools that already had their output: the engine keeps only the answers to
    what the paused reply waits for. An output `{"approved": bool, "reason"?}` also answers an approval (`ai` 5 has
    no approval parts; see AISDK.md).
    """
    approvals: list[Decision] = []
    results: list[ClientResult] = []
    for part in message.parts:
        call_id = part.tool_call_id
        if not part.is_tool or not call_id:
            continue
        if part.state == "approval-responded" and part.approval is not None and part.approval.approved is not None:
            approvals.append(decision(call_id, part.approval.approved, part.approval.reason))
        elif part.state == "output-available":
            results.append(ClientResult(call_id, part.output))
            output = part.output
            if isinstance(output, dict) and isinstance(output.get("approved"), bool):
                reason = output.get("reason")
                approvals.append(
                    decision(
                        call_id,
                        bool(output["approved"]),
                        reason[:MAX_REASON_CHARS] if isinstance(reason, str) else None,
                    )
                )
        elif part.state == "output-error":
            results.append(ClientResult(call_id, {"error": (part.error_text or "")[:MAX_REASON_CHARS]}))
    return AnswerPause(conversation_id, tuple(approvals), tuple(results), skip_settled=True)
