"""AG-UI's `RunAgentInput` and the engine command it asks for.

The server's stored history is the truth; of `messages` only the tail counts:
- tool messages after the last assistant message are the browser's results of frontend tools (a run that ended
  with `pendingToolCallIds`);
- `resume` entries answer the interrupts a paused reply ended with (approvals; a client tool's result as payload);
- else the last message, the user's, is a new message (its text, and its image or document parts as files).
`tools` are the client's frontend tools for this run; a `forwardedProps.action` is a widget action. `state`,
`context` and the rest of `forwardedProps` are accepted and not used (AGUI.md).
"""

from __future__ import annotations

import re
import uuid
from typing import Literal

import msgspec
from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from backend.chat.commands import (
    AnswerPause,
    ClientResult,
    ClientTool,
    Command,
    Decision,
    SendMessage,
    Upload,
    WidgetAction,
    decision,
)
from backend.chat.widgets import Action
from backend.errors import InvalidInputError
from backend.protocols.files import add_file_url, decode_base64
from backend.protocols.ids import MAX_CHAT_ID_CHARS, client_message_id, conversation_id_of

MAX_MESSAGES = 1000
MAX_PARTS = 200
MAX_TOOLS = 64
MAX_RESUME = 64
MAX_REASON_CHARS = 500
# What model providers accept as a function name (OpenAI's and Gemini's rule).
_TOOL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
_EMPTY_SCHEMA: dict[str, object] = {"type": "object", "properties": {}}


class _Loose(BaseModel):
    """AG-UI's shapes: camelCase on the wire, unknown fields ignored (the protocol adds optional ones)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class Source(_Loose):
    """Where a media part's bytes are: inline base64 (`data`) or a URL (`url`)."""

    type: Literal["data", "url", "file"]
    value: str
    mime_type: str | None = Field(default=None, alias="mimeType", max_length=200)


class ContentPart(_Loose):
    """One part of a user message's content: text, or an image, audio, video or document."""

    type: str = Field(max_length=50)
    text: str | None = None
    source: Source | None = None


class Message(_Loose):
    """An AG-UI message; only what this server reads is checked."""

    id: str = Field(max_length=200)
    role: Literal["developer", "system", "assistant", "user", "tool", "activity", "reasoning"]
    content: str | list[ContentPart] | dict[str, JsonValue] | None = None
    tool_call_id: str | None = Field(default=None, alias="toolCallId", max_length=200)
    error: str | None = None


class Tool(_Loose):
    """A frontend tool: the browser runs it when the model calls it."""

    name: str = Field(max_length=64)
    description: str = Field(max_length=4000)
    parameters: dict[str, JsonValue] | None = None

    @field_validator("name")
    @classmethod
    def _function_name(cls, value: str) -> str:
        if not _TOOL_NAME.fullmatch(value):
            raise ValueError("must be a function name: letters, digits, _ and -, at most 64, not starting with a digit")
        return value


class ResumeEntry(_Loose):
    """An answer to one interrupt: `resolved` with a payload, or `cancelled`."""

    interrupt_id: str = Field(alias="interruptId", max_length=200)
    status: Literal["resolved", "cancelled"]
    payload: JsonValue = None


class RunAgentInput(_Loose):
    """The body every AG-UI client posts (`HttpAgent.runAgent`)."""

    thread_id: str = Field(alias="threadId", min_length=1, max_length=MAX_CHAT_ID_CHARS, description="The thread.")
    run_id: str = Field(alias="runId", min_length=1, max_length=200, description="The client's id of this run.")
    messages: list[Message] = Field(max_length=MAX_MESSAGES)
    tools: list[Tool] | None = Field(default=None, max_length=MAX_TOOLS, description="Frontend tools for this run.")
    context: JsonValue = Field(default=None, description="Accepted, not used.")
    state: JsonValue = Field(default=None, description="Accepted, not used.")
    forwarded_props: JsonValue = Field(
        default=None, alias="forwardedProps", description="`{action}` runs a widget action; the rest is not used."
    )
    resume: list[ResumeEntry] | None = Field(default=None, max_length=MAX_RESUME)

    @field_validator("thread_id", "run_id")
    @classmethod
    def _printable(cls, value: str) -> str:
        if not value.isprintable():
            raise ValueError("must be printable")
        return value

    def to_command(self, user_id: str) -> Command:
        """The engine command this input asks for, from the user `user_id`.

        Raises:
            InvalidInputError: No new user message, answer or action; a user message without text; a bad file.
        """
        conversation_id = conversation_id_of(user_id, self.thread_id)
        tools = tuple(_client_tool(tool) for tool in self.tools or ())
        action = _action(self.forwarded_props)
        if action is not None:
            return WidgetAction(conversation_id, action)
        results = _tool_results(self.messages)
        if self.resume:
            return _resumed(conversation_id, self.resume, results, tools)
        if results:
            return AnswerPause(conversation_id, (), results, skip_settled=True, client_tools=tools)
        last = self.messages[-1] if self.messages else None
        if last is None or last.role != "user":
            raise InvalidInputError("messages: the last message must be a new user message or a tool result")
        text, attachments, uploads = _user_content(last.content)
        if not text:
            raise InvalidInputError("messages: the last user message has no text")
        return SendMessage(
            text=text,
            conversation_id=conversation_id,
            client_message_id=client_message_id(self.thread_id, last.id),
            attachments=tuple(attachments),
            uploads=tuple(uploads),
            create_missing=True,
            client_tools=tools,
        )


def _client_tool(tool: Tool) -> ClientTool:
    parameters: dict[str, object] = dict(tool.parameters) if tool.parameters else dict(_EMPTY_SCHEMA)
    return ClientTool(name=tool.name, description=tool.description, parameters=parameters)


def _action(forwarded: JsonValue) -> Action | None:
    """`forwardedProps.action`: a widget's Button or Checkbox was used."""
    if not isinstance(forwarded, dict) or forwarded.get("action") is None:
        return None
    try:
        return Action.model_validate(forwarded["action"])
    except ValueError:
        raise InvalidInputError("forwardedProps.action: not a widget action {type, payload}") from None


def _resumed(
    conversation_id: uuid.UUID,
    entries: list[ResumeEntry],
    tool_results: tuple[ClientResult, ...],
    tools: tuple[ClientTool, ...],
) -> AnswerPause:
    """Answers to interrupts, each read both ways (the engine keeps the answer for what actually waits).

    An interrupt is an approval or a client tool, and its id is the tool call's id. Tool messages after the last
    assistant message (`tool_results`) answer client tools too (a pause with approvals and frontend tools).

    - approval: `resolved` with `{approved: bool, reason?}` (or a bare boolean) decides; `cancelled` refuses.
    - client tool: `resolved` with the tool's result as `payload`; `cancelled` gives `{error: "cancelled"}`.
    """
    approvals: list[Decision] = []
    results: list[ClientResult] = list(tool_results)
    for entry in entries:
        payload = entry.payload
        if entry.status == "cancelled":
            approvals.append(decision(entry.interrupt_id, False, _reason(payload)))
            results.append(ClientResult(entry.interrupt_id, {"error": "cancelled"}))
            continue
        approved = payload if isinstance(payload, bool) else None
        if isinstance(payload, dict) and isinstance(payload.get("approved"), bool):
            approved = bool(payload["approved"])
        if approved is not None:
            approvals.append(decision(entry.interrupt_id, approved, _reason(payload)))
        results.append(ClientResult(entry.interrupt_id, payload))
    return AnswerPause(conversation_id, tuple(approvals), tuple(results), skip_settled=True, client_tools=tools)


def _reason(payload: JsonValue) -> str | None:
    reason = payload.get("reason") if isinstance(payload, dict) else None
    return reason[:MAX_REASON_CHARS] if isinstance(reason, str) else None


def _tool_results(messages: list[Message]) -> tuple[ClientResult, ...]:
    """The tool messages after the last assistant or user message: the browser's results of client tools."""
    results: list[ClientResult] = []
    for message in reversed(messages):
        if message.role != "tool":
            break
        if message.tool_call_id:
            results.append(ClientResult(message.tool_call_id, _tool_output(message)))
    return tuple(reversed(results))


def _tool_output(message: Message) -> object:
    """A tool message's content: JSON when it is JSON text (what frontends send), else the text itself."""
    if message.error:
        return {"error": message.error[:MAX_REASON_CHARS]}
    content = message.content
    if isinstance(content, list):
        content = "".join(part.text or "" for part in content)
    if isinstance(content, str):
        try:  # strict JSON (no NaN), and a nesting too deep to decode is text like any other
            parsed: object = msgspec.json.decode(content)
        except (msgspec.DecodeError, RecursionError):
            return content
        return parsed
    return content


def _user_content(
    content: str | list[ContentPart] | dict[str, JsonValue] | None,
) -> tuple[str, list[uuid.UUID], list[Upload]]:
    """A user message's text, and its media parts as attachments (our upload URLs) or uploads (inline bytes)."""
    if isinstance(content, str):
        return content.strip(), [], []
    if not isinstance(content, list):
        raise InvalidInputError("messages: a user message's content must be text or a list of parts")
    if len(content) > MAX_PARTS:
        raise InvalidInputError(f"messages: at most {MAX_PARTS} parts")
    texts: list[str] = []
    attachments: list[uuid.UUID] = []
    uploads: list[Upload] = []
    for part in content:
        if part.type == "text":
            texts.append(part.text or "")
        elif part.source is None:
            raise InvalidInputError(f"messages: a {part.type} part needs a source")
        elif part.source.type == "data":
            uploads.append(Upload(None, decode_base64(part.source.value)))
        elif part.source.type == "url":
            add_file_url(part.source.value, None, attachments, uploads)
        else:
            raise InvalidInputError("messages: file sources are not supported; send data or one of our file URLs")
    return "".join(texts).strip(), attachments, uploads
