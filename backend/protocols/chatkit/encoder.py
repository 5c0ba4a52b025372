"""Our events -> ChatKit's `ThreadStreamEvent`s, as `data: <json>` frames (ChatKit's frames carry no `id:`).

One `Encoder` per response. It folds the events into parts the way `backend.chat.reply` does, so every item it streams
has the id and the content that `threads.get_by_id` and `items.list` give after a reload (see `items`):
- `start`: for `threads.create`, `thread.created`; for a new message, the user message (`thread.item.done`); then
  `stream_options` (cancel is off: a dropped request does not stop the reply, see CHATKIT.md);
- `text`: an `assistant_message` (`thread.item.added`, `content_part.added`, `text_delta`s, `thread.item.done`,
  as ChatKitServer streams a chat-completions model's text);
- `agent` (a handoff), `tool_call`/`tool_result`, `thinking`: a `workflow` item and its tasks (`workflow.task.added`,
  `workflow.task.updated` when a tool finishes);
- `widget`: a `widget` item (`thread.item.done`; a later widget with the same id: `thread.item.replaced`);
- `approval_request`s: one approval card (`widget`); `client_tool_call`: a pending `client_tool_call` item;
- `error`: `error` with our safe message; `done`: the open item's `thread.item.done`. The stream then ends (ChatKit
  has no terminal event of its own).
A resumed reply (answered approvals, a client tool's output) replays its first segment silently, to know its items,
then replaces the approval card with the decisions and streams the rest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from backend.chat.events import (
    Agent,
    ApprovalRequest,
    ClientToolCall,
    Error,
    Event,
    Start,
    Text,
    Thinking,
    Title,
    ToolCall,
    ToolResult,
    Widget,
)
from backend.protocols.chatkit import items
from backend.protocols.chatkit.items import Group, Json

_json = msgspec.json.Encoder()
_DELTA = b'data: {"type":"thread.item.updated","item_id":"%s","update":{"type":"assistant_message.content_part.text_delta","content_index":0,"delta":%s}}\n\n'  # noqa: E501


def frame(event: Mapping[str, Any]) -> bytes:
    """One ChatKit SSE frame."""
    return b"data: " + _json.encode(event) + b"\n\n"


@dataclass(frozen=True, slots=True)
class UserTurn:
    """The user message a `threads.create` or `threads.add_user_message` stored, shown first."""

    text: str
    attachments: Sequence[Json] = ()
    new_thread: bool = False


@dataclass(slots=True)
class _Open:
    """The item being streamed: its kind, id, and what it holds so far."""

    group: Group
    id: str
    text: list[str] = field(default_factory=list)
    tasks: list[Json] = field(default_factory=list)
    parts: list[dict[str, Any]] = field(default_factory=list)


class Encoder:
    """Encodes one response's events (see the module docstring)."""

    def __init__(
        self,
        *,
        user: UserTurn | None = None,
        user_message_id: str | None = None,
        replay_until: int = 0,
        decisions: Mapping[str, str] | None = None,
        sender_item: str | None = None,
        action: bool = False,
    ) -> None:
        """Create an encoder.

        Args:
            user: The user message this request stored (shown at `start`), if any.
            user_message_id: Its id.
            replay_until: Fold events up to this id without sending them (a resumed reply's earlier segments).
            decisions: Approvals this request answered, by call id (`approved`/`rejected`).
            sender_item: The widget item a widget action came from (its new widget replaces it).
            action: The events are a widget action's: widgets replace `sender_item`, the reply is a new message.
        """
        self._user = user
        self._user_message_id = user_message_id
        self._replay_until = replay_until
        self._decisions = dict(decisions or {})
        self._sender_item = sender_item
        self._action = action
        self._began = False
        self._thread_id = ""
        self._message_id = ""
        self._created_at = items.timestamp()
        self._count = 0  # parts so far
        self._last: str | None = None  # the last part's type
        self._agent: str | None = None
        self._open: _Open | None = None
        self._workflows: dict[str, list[Json]] = {}  # workflow item id -> its tasks (kept for late tool results)
        self._tools: dict[str, tuple[str, int, dict[str, Any]]] = {}  # call id -> (item id, task index, part)
        self._widgets: dict[str, str] = {}  # widget id -> item id
        self._asks: dict[str, tuple[str, list[dict[str, Any]]]] = {}  # call id -> (card item id, its parts)
        self._clients: dict[str, tuple[str, dict[str, Any]]] = {}  # client tool call id -> (item id, part)
        self._title: str | None = None  # a generated title, told with the reply's end

    # --- the stream ----------------------------------------------------------------------------------------------

    def encode(self, event_id: int, event: Event) -> bytes:
        """The frames of one event (possibly none)."""
        live = event_id > self._replay_until
        if type(event) is Text and self._last == "text" and self._open is not None:
            self._open.text.append(event.content)  # the hot path, once per streamed text delta
            return _DELTA % (self._open.id.encode(), _json.encode(event.content)) if live else b""
        events = self._events(event, live)
        return b"".join(frame(e) for e in events) if live else b""

    def close(self) -> bytes:
        """Nothing: a ChatKit stream just ends (its last item's `thread.item.done` or an `error` came before)."""
        return b""

    def _events(self, event: Event, live: bool) -> list[Json]:
        if isinstance(event, Start):
            return self._start(event, live)
        if isinstance(event, Text):
            return self._part("text", {"type": "text", "text": event.content})
        if isinstance(event, Thinking):
            if self._last == "thinking" and self._open is not None:
                task = self._open.tasks[-1]
                task["content"] += event.content
                return [self._task_event("workflow.task.updated", self._open, len(self._open.tasks) - 1)]
            return self._part("thinking", {"type": "thinking", "text": event.content})
        if isinstance(event, Agent):
            if event.name == self._agent:
                return []
            self._agent = event.name
            return self._part("agent", {"type": "agent", "name": event.name})
        if isinstance(event, ToolCall):
            part = {"type": "tool_call", "id": event.id, "name": event.name, "args": event.args, "result": None}
            return self._part("tool_call", part)
        if isinstance(event, ToolResult):
            return self._result(event)
        if isinstance(event, Widget):
            return self._widget(event)
        if isinstance(event, ApprovalRequest):
            part = {"type": "approval", "id": event.id, "name": event.name, "args": event.args, "decision": None}
            return self._part("approval", part)
        if isinstance(event, ClientToolCall):
            part = {"type": "client_tool", "id": event.id, "name": event.name, "args": event.args, "result": None}
            return self._part("client_tool", part)
        if isinstance(event, Error):
            error = {"type": "error", "code": "custom", "message": event.message, "allow_retry": event.retryable}
            return [*self._close(), error]
        if isinstance(event, Title):  # told at the end, as ChatKitServer tells a thread's new metadata
            self._title = event.title
            return []
        return [*self._close(), *self._retitled()]  # done

    def _retitled(self) -> list[Json]:
        if self._title is None:
            return []
        thread = items.thread_json(self._thread_id, self._title, self._created_at)
        self._title = None
        return [{"type": "thread.updated", "thread": thread}]

    def _start(self, event: Start, live: bool) -> list[Json]:
        self._thread_id, self._message_id = event.conversation_id, event.message_id
        if not live or self._began:
            return []
        self._began = True
        events: list[Json] = []
        user = self._user
        if user is not None and user.new_thread:
            thread = items.thread_json(event.conversation_id, event.title, self._created_at)
            events.append({"type": "thread.created", "thread": thread})
        if user is not None and self._user_message_id is not None:
            attachments = [{**a, "thread_id": event.conversation_id} for a in user.attachments]
            item = items.user_item(
                self._user_message_id, event.conversation_id, self._created_at, user.text, attachments
            )
            events.append({"type": "thread.item.done", "item": item})
        if not self._action:
            events.append({"type": "stream_options", "stream_options": {"allow_cancel": False}})
        events += self._answered()
        return events

    def _answered(self) -> list[Json]:
        """The approval card this request answered, with its decisions."""
        replaced: dict[str, list[dict[str, Any]]] = {}
        for call_id, verdict in self._decisions.items():
            found = self._asks.get(call_id)
            if found is None:
                continue
            card_id, parts = found
            for part in parts:
                if part["id"] == call_id:
                    part["decision"] = verdict
            replaced[card_id] = parts
        return [
            {"type": "thread.item.replaced", "item": self._item(card_id, "approvals", parts)}
            for card_id, parts in replaced.items()
        ]

    # --- parts and items -----------------------------------------------------------------------------------------

    def _part(self, kind: str, part: dict[str, Any]) -> list[Json]:
        """A new part: it joins the open item, or closes it and opens its own."""
        index = self._count
        self._count += 1
        if kind == "agent" and index == 0:
            return []  # the agent a reply starts with is not shown (like the chat page); only handoffs are
        joined = items.joins(self._last, kind) and self._open is not None
        self._last = kind
        events: list[Json] = [] if joined else self._close()
        if not joined:
            self._open = _Open(items.group_of(kind), items.item_id(self._message_id, index))
            events += self._opened(self._open, part)
        opened = self._open
        assert opened is not None
        opened.parts.append(part)
        if opened.group == "workflow":
            opened.tasks.append(items.task_of(part))
            if kind == "tool_call":
                self._tools[str(part["id"])] = (opened.id, len(opened.tasks) - 1, part)
            events.append(self._task_event("workflow.task.added", opened, len(opened.tasks) - 1))
        elif opened.group == "message":
            opened.text.append(str(part["text"]))
            delta = {"type": "assistant_message.content_part.text_delta", "content_index": 0, "delta": part["text"]}
            events.append({"type": "thread.item.updated", "item_id": opened.id, "update": delta})
        elif opened.group == "approvals":
            self._asks[str(part["id"])] = (opened.id, opened.parts)
        elif opened.group in ("widget", "client_tool"):
            if opened.group == "widget":
                self._widgets[str(part["id"])] = opened.id
            else:
                self._clients[str(part["id"])] = (opened.id, part)
            events += self._close()  # one part each: shown whole at once
        return events

    def _opened(self, opened: _Open, part: dict[str, Any]) -> list[Json]:
        if opened.group == "message":
            added = items.assistant_item(opened.id, self._thread_id, self._created_at, None)
            content = {"type": "assistant_message.content_part.added", "content_index": 0}
            return [
                {"type": "thread.item.added", "item": added},
                {
                    "type": "thread.item.updated",
                    "item_id": opened.id,
                    "update": {**content, "content": items.text_content("")},
                },
            ]
        if opened.group == "workflow":
            self._workflows[opened.id] = opened.tasks
            added = items.workflow_item(opened.id, self._thread_id, self._created_at, [])
            return [{"type": "thread.item.added", "item": added}]
        return []

    def _close(self) -> list[Json]:
        opened, self._open = self._open, None
        if opened is None:
            return []
        return [{"type": "thread.item.done", "item": self._item(opened.id, opened.group, opened.parts, opened)}]

    def _item(self, item_id: str, group: Group, parts: list[dict[str, Any]], opened: _Open | None = None) -> Json:
        thread_id, created_at = self._thread_id, self._created_at
        if group == "message":
            return items.assistant_item(item_id, thread_id, created_at, "".join(opened.text if opened else ()))
        if group == "workflow":
            return items.workflow_item(item_id, thread_id, created_at, self._workflows.get(item_id, []))
        if group == "widget":
            return items.widget_item(item_id, thread_id, created_at, parts[0].get("widget") or {})
        if group == "approvals":
            return items.approvals_item(item_id, thread_id, created_at, parts)
        return items.client_tool_item(item_id, thread_id, created_at, parts[0])

    def _task_event(self, kind: str, opened: _Open, index: int) -> Json:
        update = {"type": kind, "task_index": index, "task": dict(opened.tasks[index])}
        return {"type": "thread.item.updated", "item_id": opened.id, "update": update}

    def _result(self, event: ToolResult) -> list[Json]:
        found = self._tools.get(event.id)
        if found is not None:
            item_id, index, part = found
            part["result"] = event.result
            tasks = self._workflows[item_id]
            tasks[index] = items.task_of(part)
            update = {"type": "workflow.task.updated", "task_index": index, "task": dict(tasks[index])}
            if self._open is not None and self._open.id == item_id:
                return [{"type": "thread.item.updated", "item_id": item_id, "update": update}]
            return [{"type": "thread.item.replaced", "item": self._item(item_id, "workflow", [])}]
        client = self._clients.get(event.id)
        if client is not None:
            item_id, part = client
            part["result"] = event.result
            return [{"type": "thread.item.replaced", "item": self._item(item_id, "client_tool", [part])}]
        return []

    def _widget(self, event: Widget) -> list[Json]:
        if self._action:  # a widget action: its widgets replace the item the action came from
            if self._sender_item is None:
                return []
            item = items.widget_item(self._sender_item, self._thread_id, self._created_at, event.widget)
            return [{"type": "thread.item.replaced", "item": item}]
        known = self._widgets.get(event.id)
        if known is not None:
            item = items.widget_item(known, self._thread_id, self._created_at, event.widget)
            return [{"type": "thread.item.replaced", "item": item}]
        return self._part("widget", {"type": "widget", "id": event.id, "widget": event.widget})
