"""The published types of a stored reply's `parts` (`GET /api/conversations/{id}` → `messages[].parts`).

`backend.chat.reply` folds a turn's events into these parts; this module says what each one holds, for the OpenAPI
document, the JSON Schema and the TypeScript declarations (`python -m backend.contract`). A field with a default may
be missing from a stored part (read it as that default).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from backend.chat.events import ToolOutput

Decision = Literal["approved", "rejected", "cancelled"]


class TextPart(msgspec.Struct, tag="text", tag_field="type"):
    """Text the model wrote (consecutive deltas merged)."""

    text: str


class ThinkingPart(msgspec.Struct, tag="thinking", tag_field="type"):
    """A reasoning summary the model streamed (consecutive deltas merged)."""

    text: str


class AgentPart(msgspec.Struct, tag="agent", tag_field="type"):
    """The answering agent changed (a handoff) from here on."""

    name: str


class ToolCallPart(msgspec.Struct, tag="tool_call", tag_field="type"):
    """A tool call and, once it finished, its result (the `tool_result` event's `result`)."""

    id: str
    name: str
    args: dict[str, Any]
    result: ToolOutput | None = None


class WidgetPart(msgspec.Struct, tag="widget", tag_field="type"):
    """A widget (a later widget with the same `id`, or a widget action, replaced it in place)."""

    id: str
    widget: dict[str, Any]


class ApprovalPart(msgspec.Struct, tag="approval", tag_field="type"):
    """A tool call that waited for the user: `decision` is null while it waits (the reply is `requires_action`)."""

    id: str
    name: str
    args: dict[str, Any]
    decision: Decision | None = None
    reason: str | None = None


class ClientToolPart(msgspec.Struct, tag="client_tool", tag_field="type"):
    """A tool the browser ran: `result` is null while the reply waits for it (`requires_action`)."""

    id: str
    name: str
    args: dict[str, Any]
    result: ToolOutput | None = None


Part = TextPart | ThinkingPart | AgentPart | ToolCallPart | WidgetPart | ApprovalPart | ClientToolPart
