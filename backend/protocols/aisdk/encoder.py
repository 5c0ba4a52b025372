"""Our events -> the AI SDK's UI message stream chunks (`data: <json>` frames, `id:` lines with our event ids).

One `Encoder` per response. It keeps what the protocol needs and our events do not carry: which text or reasoning
block is open, where a step (one model call) begins and ends, and the one `finish` a response ends with. A replay that
spans a paused turn's segments (start ... done, start ... done) reads as one message.

Versions: `ai` 5 lacks `tool-approval-request` and `tool-output-denied`. With version 5 an approval is a tool call
without output plus a `data-approval` part, and a refused tool gets its output `{error, rejected: true}` (see AISDK.md).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from backend.chat.events import (
    DONE_FRAME,
    Agent,
    ApprovalRequest,
    ClientToolCall,
    Done,
    Error,
    Event,
    FinishReason,
    Start,
    Text,
    Thinking,
    Title,
    ToolCall,
    ToolResult,
    Widget,
    frame,
)

Version = Literal[5, 6, 7]
HEADERS = {"x-vercel-ai-ui-message-stream": "v1"}
_FINISH: dict[FinishReason, str] = {
    "stop": "stop",
    "error": "error",
    "cancelled": "other",
    "max_turns": "length",
    "interrupted": "error",
    "approval_required": "tool-calls",
    "client_tool": "tool-calls",
}
_json = msgspec.json.Encoder()
_DELTA = b'id: %d\ndata: {"type":"text-delta","id":"%s","delta":%s}\n\n'
Chunk = dict[str, Any]


class Encoder:
    """Encodes one response's events; `close()` gives its last frames."""

    def __init__(self, version: Version, *, started: bool = False) -> None:
        """Create an encoder.

        Args:
            version: The client's `ai` major version (decides which chunk types may be sent).
            started: The response starts mid-turn (after a `Last-Event-ID`): send no `start`.
        """
        self.version = version
        self._started = started
        self._step = started
        self._after_tools = False
        self._block: tuple[str, str] | None = None  # ("text" | "reasoning", id) while one is open
        self._finish: list[Chunk] = []
        self._last_id = 0

    def encode(self, event_id: int, event: Event) -> bytes:
        """The frames of one event (possibly none), each with the event's id."""
        self._last_id = event_id
        if type(event) is Text and self._block is not None and self._block[0] == "text" and not self._after_tools:
            # The hot path, once per streamed text delta: the same bytes as the general path, built directly.
            return _DELTA % (event_id, self._block[1].encode(), _json.encode(event.content))
        chunks = self._chunks(event_id, event)
        return b"".join(_frame(event_id, chunk) for chunk in chunks)

    def close(self) -> bytes:
        """The `finish` (or `abort`) the response ends with, and `[DONE]`."""
        frames = b"".join(_frame(self._last_id, chunk) for chunk in self._finish)
        self._finish = []
        return frames + DONE_FRAME

    def _chunks(self, event_id: int, event: Event) -> list[Chunk]:
        if isinstance(event, Start):
            return self._start(event)
        chunks: list[Chunk] = []
        if isinstance(event, Text | Thinking):
            kind = "text" if isinstance(event, Text) else "reasoning"
            chunks += self._model_output()
            if self._block is None or self._block[0] != kind:
                chunks += self._close_block()
                self._block = (kind, f"{kind[0]}{event_id}")
                chunks.append({"type": f"{kind}-start", "id": self._block[1]})
            chunks.append({"type": f"{kind}-delta", "id": self._block[1], "delta": event.content})
        elif isinstance(event, Agent):
            chunks += self._model_output() + self._close_block()
            chunks.append({"type": "data-agent", "data": {"name": event.name}})
            chunks.append({"type": "message-metadata", "messageMetadata": {"agent": event.name}})
        elif isinstance(event, ToolCall | ClientToolCall):
            chunks += self._model_output() + self._close_block() + self._tool_input(event.id, event.name, event.args)
        elif isinstance(event, ApprovalRequest):
            chunks += self._close_block() + self._approval(event)
        elif isinstance(event, ToolResult):
            chunks += self._close_block()
            self._after_tools = True
            if self.version >= 6 and isinstance(event.result, dict) and event.result.get("rejected") is True:
                chunks.append({"type": "tool-output-denied", "toolCallId": event.id})
            else:
                chunks.append({"type": "tool-output-available", "toolCallId": event.id, "output": event.result})
        elif isinstance(event, Widget):
            chunks += self._close_block()
            chunks.append({"type": "data-widget", "id": event.id, "data": event.widget})
        elif isinstance(event, Title):  # not part of the message: a transient data part, and the metadata's title
            chunks.append({"type": "data-title", "data": {"title": event.title}, "transient": True})
            chunks.append({"type": "message-metadata", "messageMetadata": {"title": event.title}})
        elif isinstance(event, Error):
            chunks += self._close_block()
            chunks.append({"type": "error", "errorText": event.message})
        elif isinstance(event, Done):
            chunks += self._done(event)
        return chunks

    def _start(self, event: Start) -> list[Chunk]:
        self._finish = []  # a paused segment's end, followed by its continuation: one message goes on
        chunks: list[Chunk] = []
        if not self._started:
            self._started = True
            metadata = {"conversationId": event.conversation_id, "title": event.title}
            chunks.append({"type": "start", "messageId": event.message_id, "messageMetadata": metadata})
        if not self._step:
            self._step = True
            chunks.append({"type": "start-step"})
        return chunks

    def _model_output(self) -> list[Chunk]:
        """Model output after tool results: the next model call, so the next step."""
        if not self._after_tools:
            return []
        self._after_tools = False
        return [*self._close_block(), {"type": "finish-step"}, {"type": "start-step"}]

    def _close_block(self) -> list[Chunk]:
        if self._block is None:
            return []
        kind, block_id = self._block
        self._block = None
        return [{"type": f"{kind}-end", "id": block_id}]

    def _tool_input(self, call_id: str, name: str, args: dict[str, Any]) -> list[Chunk]:
        return [
            {"type": "tool-input-start", "toolCallId": call_id, "toolName": name},
            {"type": "tool-input-available", "toolCallId": call_id, "toolName": name, "input": args},
        ]

    def _approval(self, event: ApprovalRequest) -> list[Chunk]:
        if self.version >= 6:
            return [{"type": "tool-approval-request", "approvalId": event.id, "toolCallId": event.id}]
        data = {"toolCallId": event.id, "toolName": event.name, "input": event.args}
        return [{"type": "data-approval", "id": event.id, "data": data}]

    def _done(self, event: Done) -> list[Chunk]:
        chunks = self._close_block()
        if self._step:
            self._step = False
            chunks.append({"type": "finish-step"})
        self._after_tools = False
        if event.finish_reason == "cancelled":
            self._finish = [{"type": "abort", "reason": "stopped"}]
        else:
            usage = msgspec.structs.asdict(event.usage)
            metadata = {"finishReason": event.finish_reason, "usage": usage}
            self._finish = [
                {"type": "finish", "finishReason": _FINISH[event.finish_reason], "messageMetadata": metadata}
            ]
        return chunks


def _frame(event_id: int, chunk: Chunk) -> bytes:
    return frame(event_id, _json.encode(chunk))
