"""The one place that turns stored messages into Agents SDK input items, and a finished turn into stored items."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any, cast

from agents import MessageOutputItem, RunItem, ToolApprovalItem, TResponseInputItem

from backend.files.content import Attachment, user_content
from backend.models import Message, MessageRole, MessageStatus
from backend.storable import storable_json_text


def _message_items(message: Message, attachments: Sequence[Attachment]) -> list[dict[str, Any]]:
    if message.role == MessageRole.USER:
        if attachments:
            return [{"role": "user", "content": user_content(message.content, attachments)}]
        return [{"role": "user", "content": message.content}]
    if message.items:
        return [_storable_call(item) for item in message.items]
    return [{"role": "assistant", "content": message.content}] if message.content else []


def _storable_call(item: dict[str, Any]) -> dict[str, Any]:
    """A stored item, a tool call's arguments under the text policy (older rows may hold an escaped lone surrogate)."""
    arguments = item.get("arguments")
    if item.get("type") != "function_call" or not isinstance(arguments, str):
        return item
    cleaned = storable_json_text(arguments)
    return item if cleaned is arguments else {**item, "arguments": cleaned}


def _pair_tool_items(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop tool calls without outputs and outputs without calls; LiteLLM refuses unpaired ones."""
    calls = {i.get("call_id") for i in items if i.get("type") == "function_call"}
    outputs = {i.get("call_id") for i in items if i.get("type") == "function_call_output"}
    paired = calls & outputs
    return [
        i for i in items if i.get("type") not in {"function_call", "function_call_output"} or i["call_id"] in paired
    ]


def to_agent_input(
    messages: Sequence[Message],
    max_items: int,
    attachments: Mapping[uuid.UUID, Sequence[Attachment]] | None = None,
) -> list[TResponseInputItem]:
    """Build the model input for the next turn from a conversation's messages (oldest first).

    Long histories are trimmed from the oldest end, and only at user-message boundaries, so that a tool call is
    never separated from its output. The newest user turn is always kept, even if alone it exceeds `max_items`.
    A user message with attachments becomes content parts (`backend.files.content.user_content`).

    Args:
        messages: The conversation's latest messages in sequence order, ending with the new user message.
        max_items: The most input items to send.
        attachments: Message id -> its attachments with the bytes to send (`backend.files.content.load_attachments`).

    Returns:
        Input items for `Runner.run_streamed`.
    """
    groups: list[list[dict[str, Any]]] = []
    attachments = attachments or {}
    for message in messages:
        items = _message_items(message, attachments.get(message.id, ()))
        if message.role == MessageRole.USER or not groups:
            groups.append(items)
        else:
            groups[-1].extend(items)
    kept: list[list[dict[str, Any]]] = []
    total = 0
    for group in reversed(groups):
        if kept and total + len(group) > max_items:
            break
        kept.append(group)
        total += len(group)
    if kept and kept[-1] and kept[-1][0].get("role") != "user":
        kept.pop()  # history that begins mid-turn would start with an orphan reply
    items = _pair_tool_items([item for group in reversed(kept) for item in group])
    # The one place stored JSON becomes SDK input: the stored items came from the SDK's `to_input_item()`, the others
    # are plain user and assistant messages.
    return cast("list[TResponseInputItem]", items)


def turn_items(new_items: Sequence[RunItem], text: str, status: MessageStatus) -> list[dict[str, Any]]:
    """The input items that replay a finished (or interrupted) assistant turn to the model later.

    Args:
        new_items: `RunResultStreaming.new_items`: the tool calls, outputs and messages the run completed.
        text: All text the user was shown for this turn.
        status: How the turn ended.

    Returns:
        JSON-ready items. When the run stopped mid-reply, the partial text the user saw is appended as an
        assistant message, since the SDK keeps only completed items.
    """
    # Approval markers are bookkeeping of a paused run, not model input.
    items = [dict(item.to_input_item()) for item in new_items if not isinstance(item, ToolApprovalItem)]
    has_message = any(isinstance(item, MessageOutputItem) for item in new_items)
    if text and (status != MessageStatus.COMPLETE or not has_message):
        shown = "".join(
            part.get("text", "")
            for item in items
            if item.get("type") == "message"
            for part in _parts(item.get("content"))
        )
        rest = text[len(shown) :] if text.startswith(shown) else text
        if rest:
            items.append({"role": "assistant", "content": rest})
    return _pair_tool_items(items)


def _parts(content: object) -> list[dict[str, Any]]:
    """The dict parts of a message item's `content` (a string content has none)."""
    return [part for part in content if isinstance(part, dict)] if isinstance(content, list) else []
