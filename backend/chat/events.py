"""The SSE event vocabulary of `POST /chatkit`. Every event is a typed object; this module alone encodes the wire.

Each event is one SSE frame, a single `data: <json>` line and a blank line, whose JSON carries a `type`. A stream
always opens with `start` and, unless the client went away, ends with `done` followed by the frame `data: [DONE]`.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

FinishReason = Literal["stop", "error", "cancelled", "max_turns"]
ErrorCode = Literal[
    "rate_limited", "provider_unavailable", "provider_error", "max_turns", "server_shutdown", "internal"
]


class Usage(msgspec.Struct, frozen=True):
    """Token usage of a whole turn (every model call in it)."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0


class Start(msgspec.Struct, tag="start", tag_field="type"):
    """First event: where the reply will be stored, so a new conversation's UI can show it at once."""

    conversation_id: str
    message_id: str
    title: str


class Text(msgspec.Struct, tag="text", tag_field="type"):
    """A text delta exactly as the model streamed it."""

    content: str


class Thinking(msgspec.Struct, tag="thinking", tag_field="type"):
    """A reasoning-summary delta, sent only when the model streams one."""

    content: str


class ToolCall(msgspec.Struct, tag="tool_call", tag_field="type"):
    """The model called a tool; `args` is the parsed JSON object."""

    id: str
    name: str
    args: dict[str, Any]


class ToolResult(msgspec.Struct, tag="tool_result", tag_field="type"):
    """A tool finished; `id` matches the `tool_call`, `result` is JSON."""

    id: str
    name: str
    result: Any


class Error(msgspec.Struct, tag="error", tag_field="type"):
    """The run failed. The code is from a small stable set; the message is ours, never provider text."""

    code: ErrorCode
    message: str
    retryable: bool


class Done(msgspec.Struct, tag="done", tag_field="type"):
    """Last event of every stream the client stayed for."""

    conversation_id: str
    message_id: str
    finish_reason: FinishReason
    usage: Usage


Event = Start | Text | Thinking | ToolCall | ToolResult | Error | Done

DONE_FRAME = b"data: [DONE]\n\n"
_encoder = msgspec.json.Encoder()


def encode(event: Event) -> bytes:
    """Encode one event as a complete SSE frame.

    Args:
        event: Any event of the vocabulary.

    Returns:
        One `data: <json>` line and a blank line, as bytes. JSON never holds a raw newline, so one line suffices.
    """
    return b"data: " + _encoder.encode(event) + b"\n\n"


def decode(payload: str | bytes) -> Event:
    """Parse the JSON of one frame back into its typed event (for clients and tests)."""
    return msgspec.json.decode(payload, type=Event)
