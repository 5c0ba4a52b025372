"""A reply as the user saw it: our events folded, in order, into typed parts (the stored shape of a reply).

The same fold runs live, while a turn streams, and after a crash, over the turn's stored event log, so a reply that is
taken over reads exactly as far as its last stored batch.

Parts, in the order they happened:
- `{"type": "text", "text"}` and `{"type": "thinking", "text"}` (consecutive deltas merged);
- `{"type": "agent", "name"}` when the answering agent changes;
- `{"type": "tool_call", "id", "name", "args", "result"}`;
- `{"type": "widget", "id", "widget"}` (a later widget with the same id replaces it in place);
- `{"type": "approval", "id", "name", "args", "decision", "reason"}` (decision: null, approved, rejected, cancelled);
- `{"type": "client_tool", "id", "name", "args", "result"}`.
The last two are a pause's asks; `backend.chat.pause` builds them and folds the answers in.
"""

from __future__ import annotations

from collections.abc import Iterable

from backend.chat.events import (
    Agent,
    ApprovalRequest,
    ClientToolCall,
    Event,
    Text,
    Thinking,
    ToolCall,
    ToolResult,
    Widget,
)
from backend.chat.pause import Part, part_of


class Reply:
    """Folds events into parts. Text deltas are buffered and joined only when a snapshot is taken."""

    __slots__ = ("_by_id", "_chunks", "_parts", "agent")

    def __init__(self, parts: Iterable[Part] = (), agent: str | None = None) -> None:
        """Start empty, or from the parts of a paused reply that continues."""
        self._parts: list[Part] = [dict(p) for p in parts]
        self._chunks: list[str] | None = None  # deltas of the last part, when it is text or thinking
        self._by_id: dict[tuple[str, str], Part] = {
            (p["type"], p["id"]): p for p in self._parts if isinstance(p.get("id"), str)
        }
        self.agent = agent

    def _close_text(self) -> None:
        if self._chunks is not None:
            self._parts[-1]["text"] = "".join(self._chunks)
            self._chunks = None

    def _delta(self, kind: str, content: str) -> None:
        last = self._parts[-1] if self._parts else None
        if last is not None and last["type"] == kind:
            if self._chunks is None:
                self._chunks = [last["text"]]
            self._chunks.append(content)
            return
        self._close_text()
        self._parts.append({"type": kind, "text": ""})
        self._chunks = [content]

    def _append(self, part: Part) -> None:
        self._close_text()
        self._parts.append(part)
        if isinstance(part.get("id"), str):
            self._by_id[(part["type"], part["id"])] = part

    def add(self, event: Event) -> None:
        """Fold one event in."""
        if isinstance(event, Text):
            self._delta("text", event.content)
        elif isinstance(event, Thinking):
            self._delta("thinking", event.content)
        elif isinstance(event, ToolCall):
            self._append({"type": "tool_call", "id": event.id, "name": event.name, "args": event.args, "result": None})
        elif isinstance(event, ToolResult):
            target = self._by_id.get(("tool_call", event.id)) or self._by_id.get(("client_tool", event.id))
            if target is not None:
                target["result"] = event.result
        elif isinstance(event, Widget):
            existing = self._by_id.get(("widget", event.id))
            if existing is not None:
                existing["widget"] = event.widget
            else:
                self._append({"type": "widget", "id": event.id, "widget": event.widget})
        elif isinstance(event, ApprovalRequest | ClientToolCall):
            self._append(part_of(event))
        elif isinstance(event, Agent):
            if event.name != self.agent:
                self._append({"type": "agent", "name": event.name})
            self.agent = event.name

    def parts(self) -> list[Part]:
        """The parts so far (a copy, safe to store)."""
        self._close_text()
        return [dict(p) for p in self._parts]

    @property
    def text(self) -> str:
        """All text parts joined: the message's `content`, used for previews and simple clients."""
        self._close_text()
        return "".join(p["text"] for p in self._parts if p["type"] == "text")

    def call_names(self) -> dict[str, str]:
        """Tool names by call id, of the tool calls and client tools so far."""
        return {p["id"]: p["name"] for p in self._parts if p["type"] in {"tool_call", "client_tool"}}

    def tool_calls(self) -> list[Part]:
        """Tool calls with their results, in the legacy `tool_calls` shape."""
        return [
            {"id": p["id"], "name": p["name"], "args": p["args"], "result": p["result"]}
            for p in self._parts
            if p["type"] == "tool_call"
        ]
