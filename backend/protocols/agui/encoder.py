"""Our events -> AG-UI 1.0 events (`data: <json>` frames with `id:` lines holding our event ids).

One `Encoder` per response. It keeps what AG-UI needs and our events do not carry: the run's ids, which text or
reasoning message is open, which step (the answering agent) is open, what a pause waits for, and the one
terminal event (`RUN_FINISHED` or `RUN_ERROR`) a response ends with. AG-UI's ordering rules hold for every response:
`RUN_STARTED` first; each message, reasoning message and tool call started before its content and ended before the
run ends; every step finished; exactly one terminal event, last. A replay that spans a paused reply's segments
(start ... done, start ... done) reads as one run.
"""

from __future__ import annotations

import msgspec

from backend.chat.events import (
    Agent,
    ApprovalRequest,
    ClientToolCall,
    Done,
    Error,
    Event,
    Start,
    Text,
    Thinking,
    Title,
    ToolCall,
    ToolResult,
    Usage,
    Widget,
    frame,
)

EventJson = dict[str, object]
STREAM_ENDED = "The stream ended before the reply did; rejoin it to see the rest."
APPROVAL_SCHEMA: dict[str, object] = {
    "type": "object",
    "properties": {"approved": {"type": "boolean"}, "reason": {"type": "string"}},
    "required": ["approved"],
}
_json = msgspec.json.Encoder()
_CONTENT = b'id: %d\ndata: {"type":"TEXT_MESSAGE_CONTENT","messageId":"%s","delta":%s}\n\n'


class Encoder:
    """Encodes one response's events; `close()` gives its terminal event if none was sent yet."""

    def __init__(self, thread_id: str, run_id: str, message_id: str = "") -> None:
        """Create an encoder.

        Args:
            thread_id: The client's thread id (echoed in `RUN_STARTED` and `RUN_FINISHED`).
            run_id: The client's run id (a rejoin that names none uses our assistant message id).
            message_id: Our assistant message id, if known before its `start` (a rejoin after `Last-Event-ID`).
        """
        self.thread_id = thread_id
        self.run_id = run_id
        self._started = False
        self._ended = False
        self._block: tuple[str, str] | None = None  # ("text" | "reasoning", message id) while one is open
        self._step: str | None = None
        self._interrupts: list[EventJson] = []
        self._client_calls: list[str] = []  # the calls of frontend tools the run waits for
        self._finish: EventJson | None = None
        self._title: dict[str, str] | None = None  # a generated title, told at the run's end
        self._message_id = message_id
        self._last_id = 0

    def encode(self, event_id: int, event: Event) -> bytes:
        """The frames of one event (possibly none), each with the event's id."""
        self._last_id = event_id
        if self._ended:
            return b""  # after RUN_ERROR nothing may follow
        block = self._block
        if type(event) is Text and block is not None and block[0] == "text" and event.content:
            # The hot path, once per streamed text delta: the same bytes as the general path, built directly.
            return _CONTENT % (event_id, block[1].encode(), _json.encode(event.content))
        return b"".join(_frame(event_id, item) for item in self._events(event_id, event))

    def close(self) -> bytes:
        """The terminal event: the pending `RUN_FINISHED`, or `RUN_ERROR` if the stream ended before the reply."""
        if self._ended:
            return b""
        events = self._run_started() + self._close_block() + self._close_step()
        finish = self._finish
        events.append(finish if finish is not None else {"type": "RUN_ERROR", "message": STREAM_ENDED, "code": "ended"})
        self._ended = True
        return b"".join(_frame(self._last_id, item) for item in events)

    def _run_started(self, metadata: dict[str, object] | None = None) -> list[EventJson]:
        if self._started:
            return []
        self._started = True
        started: EventJson = {"type": "RUN_STARTED", "threadId": self.thread_id, "runId": self.run_id}
        if metadata is not None:
            started["metadata"] = metadata
        return [started]

    def _events(self, event_id: int, event: Event) -> list[EventJson]:
        if isinstance(event, Start):
            self._message_id = event.message_id
            self._finish = None  # a paused segment's end, followed by its continuation: one run goes on
            metadata: dict[str, object] = {
                "conversationId": event.conversation_id,
                "messageId": event.message_id,
                "title": event.title,
            }
            return self._run_started(metadata)
        events = self._run_started()
        if isinstance(event, Text | Thinking):
            if event.content:
                events += self._content(event_id, "text" if isinstance(event, Text) else "reasoning", event.content)
        elif isinstance(event, Agent):
            events += self._close_block() + self._close_step()
            self._step = event.name
            events.append({"type": "STEP_STARTED", "stepName": event.name})
        elif isinstance(event, ToolCall | ClientToolCall):
            events += self._close_block() + _tool_call(event.id, event.name, event.args)
            if isinstance(event, ClientToolCall):
                self._client_calls.append(event.id)
                self._interrupts.append({"id": event.id, "reason": "client_tool", "toolCallId": event.id})
        elif isinstance(event, ApprovalRequest):
            events += self._close_block()
            self._interrupts.append(
                {
                    "id": event.id,
                    "reason": "tool_approval",
                    "message": f"Allow {event.name}?",
                    "toolCallId": event.id,
                    "responseSchema": APPROVAL_SCHEMA,
                }
            )
        elif isinstance(event, ToolResult):
            events += self._close_block()
            events.append(
                {
                    "type": "TOOL_CALL_RESULT",
                    "messageId": f"{self._message_id}-r{event_id}",
                    "toolCallId": event.id,
                    "content": _json.encode(event.result).decode(),
                    "role": "tool",
                }
            )
        elif isinstance(event, Widget):
            events += self._close_block()
            events.append({"type": "CUSTOM", "name": "widget", "value": {"id": event.id, "widget": event.widget}})
        elif isinstance(event, Error):
            events += self._close_block() + self._close_step()
            events.append({"type": "RUN_ERROR", "message": event.message, "code": event.code})
            self._ended = True
        elif isinstance(event, Title):  # told with the run's end, so it never splits the message being streamed
            self._title = {"conversationId": event.conversation_id, "title": event.title}
        elif isinstance(event, Done):
            events += self._done(event)
        return events

    def _content(self, event_id: int, kind: str, delta: str) -> list[EventJson]:
        events: list[EventJson] = []
        if self._block is None or self._block[0] != kind:
            events += self._close_block()
            message_id = f"{self._message_id}-{kind[0]}{event_id}"
            self._block = (kind, message_id)
            if kind == "text":
                events.append({"type": "TEXT_MESSAGE_START", "messageId": message_id, "role": "assistant"})
            else:
                events.append({"type": "REASONING_START", "messageId": message_id})
                events.append({"type": "REASONING_MESSAGE_START", "messageId": message_id, "role": "reasoning"})
        assert self._block is not None
        prefix = "TEXT_MESSAGE" if kind == "text" else "REASONING_MESSAGE"
        events.append({"type": f"{prefix}_CONTENT", "messageId": self._block[1], "delta": delta})
        return events

    def _close_block(self) -> list[EventJson]:
        if self._block is None:
            return []
        kind, message_id = self._block
        self._block = None
        if kind == "text":
            return [{"type": "TEXT_MESSAGE_END", "messageId": message_id}]
        return [
            {"type": "REASONING_MESSAGE_END", "messageId": message_id},
            {"type": "REASONING_END", "messageId": message_id},
        ]

    def _close_step(self) -> list[EventJson]:
        if self._step is None:
            return []
        name, self._step = self._step, None
        return [{"type": "STEP_FINISHED", "stepName": name}]

    def _done(self, event: Done) -> list[EventJson]:
        events = self._close_block() + self._close_step()
        if self._title is not None:
            events.append({"type": "CUSTOM", "name": "title", "value": self._title})
            self._title = None
        finish: EventJson = {"type": "RUN_FINISHED", "threadId": self.thread_id, "runId": self.run_id}
        reason = event.finish_reason
        if reason == "approval_required" and self._interrupts:
            finish["outcome"] = {"type": "interrupt", "interrupts": self._interrupts}
        elif reason == "client_tool" and self._client_calls:
            # A run that stopped on frontend tools is a completed run (AG-UI): the client answers them with tool
            # messages in its next run; an interrupt would make `@ag-ui/client` refuse that next run.
            finish["outcome"] = {"type": "success", "pendingToolCallIds": self._client_calls}
        elif reason == "cancelled":
            finish["outcome"] = {"type": "cancelled"}
        elif reason in ("error", "interrupted"):
            # A failure always comes as `error` first (RUN_ERROR ended the run); this is a safety net.
            self._finish = {"type": "RUN_ERROR", "message": "The reply failed.", "code": reason}
            return events
        else:
            finish["outcome"] = {"type": "success"}
        self._interrupts, self._client_calls = [], []
        finish["usage"] = [_usage(event.usage)]
        finish["result"] = {"finishReason": reason, "messageId": event.message_id}
        self._finish = finish
        return events


def _tool_call(call_id: str, name: str, args: dict[str, object]) -> list[EventJson]:
    return [
        {"type": "TOOL_CALL_START", "toolCallId": call_id, "toolCallName": name},
        {"type": "TOOL_CALL_ARGS", "toolCallId": call_id, "delta": _json.encode(args).decode()},
        {"type": "TOOL_CALL_END", "toolCallId": call_id},
    ]


def _usage(usage: Usage) -> EventJson:
    return {"inputTokens": usage.input_tokens, "outputTokens": usage.output_tokens, "totalTokens": usage.total_tokens}


def _frame(event_id: int, event: EventJson) -> bytes:
    return frame(event_id, _json.encode(event))
