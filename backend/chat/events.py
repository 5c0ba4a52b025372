"""The SSE event vocabulary of `POST /chatkit`. Every event is a typed object; this module alone encodes the wire.

Each event is one SSE frame: an `id:` line (unique and increasing within the assistant message's turn, so a client
can rejoin with `Last-Event-ID`), a single `data: <json>` line whose JSON carries a `type`, and a blank line. A stream
always opens with `start` and ends with `done` followed by the frame `data: [DONE]`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from backend.storable import storable_json

FinishReason = Literal["stop", "error", "cancelled", "max_turns", "interrupted", "approval_required", "client_tool"]
ErrorCode = Literal[
    "rate_limited",
    "quota_exceeded",
    "provider_unavailable",
    "provider_error",
    "max_turns",
    "server_shutdown",
    "turn_timeout",
    "interrupted",
    "internal",
]


_TOOL_OUTPUT_DOC = (
    "What a tool call gave back: always a JSON object. Our own tools' objects as they are (a failure has an `error` "
    "sentence); `{text}` when a tool answered text (an external MCP tool's text content, joined); `{value}` for any "
    "other JSON value (a client tool's array); `{error, rejected: true}` when the user rejected the call."
)
ToolOutput = Annotated[
    dict[str, Any],
    msgspec.Meta(
        title="ToolOutput",
        description=_TOOL_OUTPUT_DOC,
        extra_json_schema={
            "properties": {
                "text": {"type": "string"},
                "error": {"type": "string"},
                "rejected": {"type": "boolean"},
                "value": {},
            },
            "additionalProperties": True,
        },
    ),
]
"""A tool's result, built by `backend.chat.translate.tool_output` (see `_TOOL_OUTPUT_DOC`)."""
StartStatus = Literal["in_progress", "complete"]


class Usage(msgspec.Struct, frozen=True):
    """Token usage of a whole turn (every model call in it)."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0


class Start(msgspec.Struct, tag="start", tag_field="type"):
    """First event: where the reply is stored (`message_id`), so the UI can show it and rejoin it later."""

    conversation_id: str
    message_id: str
    title: str
    status: StartStatus = "in_progress"


class Agent(msgspec.Struct, tag="agent", tag_field="type"):
    """The agent now answering (sent at the start of a run and whenever a handoff changes it)."""

    name: str


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
    """A tool finished; `id` matches the `tool_call` (or `client_tool_call`), `result` is always a JSON object."""

    id: str
    name: str
    result: ToolOutput


class Widget(msgspec.Struct, tag="widget", tag_field="type"):
    """A widget to show (see `backend.chat.widgets`); a later `widget` with the same `id` replaces it."""

    id: str
    widget: dict[str, Any]


class ApprovalRequest(msgspec.Struct, tag="approval_request", tag_field="type"):
    """A tool call that waits for the user's approval; answer with `POST /chatkit {thread_id, approvals}`."""

    id: str
    name: str
    args: dict[str, Any]


class ClientToolCall(msgspec.Struct, tag="client_tool_call", tag_field="type"):
    """A tool the browser runs; answer with `POST /chatkit {thread_id, client_tool_results}`."""

    id: str
    name: str
    args: dict[str, Any]


class Error(msgspec.Struct, tag="error", tag_field="type"):
    """The run failed. The code is from a small stable set; the message is ours, never provider text."""

    code: ErrorCode
    message: str
    retryable: bool


class Title(msgspec.Struct, tag="title", tag_field="type"):
    """A new conversation's generated title: sent once in its first turn if stored before `done`, else on lists."""

    # The title model runs alongside the first reply; a user's rename always wins (no `title` follows one).

    conversation_id: str
    title: str


class Done(msgspec.Struct, tag="done", tag_field="type"):
    """Last event of every stream."""

    conversation_id: str
    message_id: str
    finish_reason: FinishReason
    usage: Usage


Event = (
    Start
    | Agent
    | Text
    | Thinking
    | ToolCall
    | ToolResult
    | Widget
    | ApprovalRequest
    | ClientToolCall
    | Title
    | Error
    | Done
)

DONE_FRAME = b"data: [DONE]\n\n"
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Event)  # built once: `msgspec.json.decode(data, type=Event)` costs ~35 us a call


def event_type(event: Event) -> str:
    """The wire `type` of an event."""
    return event.__struct_config__.tag  # type: ignore[return-value]


def payload(event: Event) -> bytes:
    """The event's JSON. Text that cannot be UTF-8 (a lone surrogate from the model) goes out as U+FFFD."""
    try:
        return _encoder.encode(event)
    except UnicodeEncodeError:
        return _encoder.encode(storable_json(msgspec.to_builtins(event)))


def frame(event_id: int, data: bytes) -> bytes:
    """One complete SSE frame: `id:`, one `data:` line (JSON never holds a raw newline) and a blank line."""
    return b"id: %d\ndata: %s\n\n" % (event_id, data)


def encode(event: Event, event_id: int) -> bytes:
    """Encode one event as a complete SSE frame with its id."""
    return frame(event_id, payload(event))


def decode(data: str | bytes) -> Event:
    """Parse the JSON of one frame back into its typed event (for clients, tests and the turn takeover)."""
    event: Event = _decoder.decode(data)
    return event


def parse_frames(chunk: bytes) -> list[tuple[int, Event]]:
    """The `(id, event)` pairs of one or more complete frames as `encode` writes them (`[DONE]` and comments skipped).

    For protocol adapters, which encode our events into their own frames: the turn engine streams pre-encoded frames,
    and decoding them here is cheaper than keeping a second, typed copy of every live event.
    """
    pairs: list[tuple[int, Event]] = []
    for block in chunk.split(b"\n\n"):
        if not block.startswith(b"id: "):
            continue  # `data: [DONE]`, a keep-alive comment, or the empty tail
        id_line, _, data_line = block.partition(b"\n")
        pairs.append((int(id_line[4:]), decode(data_line.removeprefix(b"data: "))))
    return pairs
