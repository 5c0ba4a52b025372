"""Our messages and their parts as ChatKit thread items, with ids that stay the same streamed and reloaded.

A user message is one `user_message` item whose id is the message's id. An assistant message's parts become items
named `<message id>.<index of the item's first part>`, grouped the same way live (`encoder`) and from storage (here):
- consecutive `text` parts: one `assistant_message` (its text in one `output_text` content part);
- consecutive `agent`, `tool_call` and `thinking` parts: one `workflow` item (`custom`), a task each: a handoff
  (the agent a reply starts with, its first part, is not shown), a tool call (`loading` until its result), a thought;
- a `widget` part: a `widget` item (the widget in ChatKit's spelling, see `widgets`);
- consecutive `approval` parts: one `widget` item, the approval card (Approve and Reject while they wait);
- a `client_tool` part: a `client_tool_call` item (`pending` until the browser's result).
A reply that is still running adds a `task` item `<message id>.running` ("Replying…", loading).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from backend.protocols.chatkit.widgets import approval_card, chatkit_widget

Json = dict[str, Any]
Group = Literal["message", "workflow", "widget", "approvals", "client_tool"]
RUNNING = "running"
MAX_TASK_CHARS = 300
_GROUP_OF: Mapping[str, Group] = {
    "text": "message",
    "agent": "workflow",
    "tool_call": "workflow",
    "thinking": "workflow",
    "widget": "widget",
    "approval": "approvals",
    "client_tool": "client_tool",
}
_GROUPED: frozenset[Group] = frozenset({"message", "workflow", "approvals"})


class AttachmentView(Protocol):
    """What an item shows of an attached file."""

    @property
    def id(self) -> uuid.UUID: ...  # noqa: D102
    @property
    def name(self) -> str: ...  # noqa: D102
    @property
    def content_type(self) -> str: ...  # noqa: D102


class MessageView(Protocol):
    """What the items are made of: a stored message as `backend.conversations.access` reads it."""

    @property
    def id(self) -> uuid.UUID: ...  # noqa: D102
    @property
    def role(self) -> str: ...  # noqa: D102
    @property
    def content(self) -> str: ...  # noqa: D102
    @property
    def parts(self) -> list[dict[str, Any]]: ...  # noqa: D102
    @property
    def status(self) -> str: ...  # noqa: D102
    @property
    def created_at(self) -> datetime: ...  # noqa: D102
    @property
    def attachments(self) -> Sequence[AttachmentView]: ...  # noqa: D102


def item_id(message_id: uuid.UUID | str, index: int | str) -> str:
    """The id of the item that starts at part `index` of an assistant message."""
    return f"{message_id}.{index}"


def message_of(item: str) -> uuid.UUID | None:
    """The message an item id belongs to (None for an id that is not ours)."""
    try:
        return uuid.UUID(item.partition(".")[0])
    except ValueError:
        return None


def group_of(part_type: str) -> Group:
    """Which kind of item a part goes into."""
    return _GROUP_OF.get(part_type, "workflow")


def joins(previous: str | None, part_type: str) -> bool:
    """Whether a part of `part_type` goes into the same item as the part before it (of `previous` type)."""
    if previous is None:
        return False
    group = group_of(part_type)
    return group in _GROUPED and group_of(previous) == group


def thread_json(thread_id: str, title: str, created_at: str, page: Json | None = None) -> Json:
    """A ChatKit `Thread`: an active thread with a page of its items (none by default)."""
    return {
        "id": thread_id,
        "title": title,
        "created_at": created_at,
        "status": {"type": "active"},
        "items": page or {"data": [], "has_more": False},
    }


def timestamp(value: datetime | None = None) -> str:
    """An ISO 8601 time (UTC when the database gave no zone)."""
    moment = value or datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()


def base(kind: str, item: str, thread_id: str, created_at: str) -> Json:
    """The fields every item has."""
    return {"type": kind, "id": item, "thread_id": thread_id, "created_at": created_at}


def attachment_json(file_id: uuid.UUID, name: str, mime_type: str, base_url: str, thread_id: str | None = None) -> Json:
    """A ChatKit attachment for one of our files (`image` with a preview URL for images, else `file`)."""
    attachment: Json = {"type": "file", "id": str(file_id), "name": name, "mime_type": mime_type}
    if mime_type.startswith("image/"):
        attachment["type"] = "image"
        attachment["preview_url"] = f"{base_url}/api/files/{file_id}/content"
    if thread_id is not None:
        attachment["thread_id"] = thread_id
    return attachment


def user_item(
    message_id: uuid.UUID | str, thread_id: str, created_at: str, text: str, attachments: Sequence[Json] = ()
) -> Json:
    """A user message."""
    item = base("user_message", str(message_id), thread_id, created_at)
    item["content"] = [{"type": "input_text", "text": text}]
    item["attachments"] = list(attachments)
    item["inference_options"] = {}
    return item


def assistant_item(item: str, thread_id: str, created_at: str, text: str | None) -> Json:
    """An assistant message; `text` None while it has no content part yet."""
    message = base("assistant_message", item, thread_id, created_at)
    message["content"] = [] if text is None else [text_content(text)]
    return message


def text_content(text: str) -> Json:
    """An `output_text` content part."""
    return {"type": "output_text", "text": text, "annotations": []}


def workflow_item(item: str, thread_id: str, created_at: str, tasks: list[Json]) -> Json:
    """A workflow of custom tasks (handoffs, tool calls, thoughts)."""
    workflow = base("workflow", item, thread_id, created_at)
    workflow["workflow"] = {"type": "custom", "tasks": list(tasks), "expanded": False}
    return workflow


def _short(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= MAX_TASK_CHARS else text[: MAX_TASK_CHARS - 1] + "…"


def task_of(part: Mapping[str, Any]) -> Json:
    """The workflow task of an `agent`, `tool_call` or `thinking` part."""
    kind = part.get("type")
    if kind == "agent":
        return {"type": "custom", "title": f"{part.get('name', '')} is answering", "status_indicator": "complete"}
    if kind == "thinking":
        return {"type": "thought", "content": str(part.get("text", "")), "status_indicator": "complete"}
    done = part.get("result") is not None
    task: Json = {"type": "custom", "title": str(part.get("name", "")), "content": _short(part.get("args") or {})}
    task["status_indicator"] = "complete" if done else "loading"
    return task


def widget_item(item: str, thread_id: str, created_at: str, widget: Mapping[str, Any]) -> Json:
    """A widget (ours, converted)."""
    shown = base("widget", item, thread_id, created_at)
    shown["widget"] = chatkit_widget(widget)
    return shown


def approvals_item(item: str, thread_id: str, created_at: str, asks: Sequence[Mapping[str, Any]]) -> Json:
    """The approval card of consecutive `approval` parts."""
    shown = base("widget", item, thread_id, created_at)
    shown["widget"] = approval_card(asks)
    return shown


def client_tool_item(item: str, thread_id: str, created_at: str, part: Mapping[str, Any]) -> Json:
    """A browser-side tool call: `pending` until its result."""
    call = base("client_tool_call", item, thread_id, created_at)
    result = part.get("result")
    call.update(
        call_id=str(part.get("id", "")),
        name=str(part.get("name", "")),
        arguments=dict(part.get("args") or {}),
        status="pending" if result is None else "completed",
    )
    if result is not None:
        call["output"] = result
    return call


def running_item(message_id: uuid.UUID, thread_id: str, created_at: str) -> Json:
    """The marker of a reply that is still being written."""
    task = base("task", item_id(message_id, RUNNING), thread_id, created_at)
    task["task"] = {"type": "custom", "title": "Replying…", "status_indicator": "loading"}
    return task


def items_of(message: MessageView, thread_id: str, base_url: str) -> list[Json]:
    """The items of one stored message."""
    created_at = timestamp(message.created_at)
    if message.role == "user":
        attachments = [attachment_json(a.id, a.name, a.content_type, base_url, thread_id) for a in message.attachments]
        return [user_item(message.id, thread_id, created_at, message.content, attachments)]
    groups: list[tuple[int, list[Mapping[str, Any]]]] = []
    previous: str | None = None
    for index, part in enumerate(message.parts):
        kind = str(part.get("type", ""))
        if kind == "agent" and index == 0:
            continue  # the agent a reply starts with is not shown (like the chat page); only handoffs are
        if joins(previous, kind):
            groups[-1][1].append(part)
        else:
            groups.append((index, [part]))
        previous = kind
    items = [_item(item_id(message.id, index), thread_id, created_at, parts) for index, parts in groups]
    if message.status == "in_progress":
        items.append(running_item(message.id, thread_id, created_at))
    return items


def _item(item: str, thread_id: str, created_at: str, parts: list[Mapping[str, Any]]) -> Json:
    group = group_of(str(parts[0].get("type", "")))
    if group == "message":
        return assistant_item(item, thread_id, created_at, "".join(str(p.get("text", "")) for p in parts))
    if group == "widget":
        return widget_item(item, thread_id, created_at, parts[0].get("widget") or {})
    if group == "approvals":
        return approvals_item(item, thread_id, created_at, parts)
    if group == "client_tool":
        return client_tool_item(item, thread_id, created_at, parts[0])
    return workflow_item(item, thread_id, created_at, [task_of(p) for p in parts])
