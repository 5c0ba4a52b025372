"""Exporting a conversation: every message of its active path as JSON, or a readable Markdown transcript. No HTTP."""

from __future__ import annotations

import json
import re
import unicodedata
import uuid
from typing import Literal

from sqlmodel.ext.asyncio.session import AsyncSession

from backend.conversations.service import get_conversation, list_messages, public_messages
from backend.models import ConversationExport, Message, MessagePublic, MessageRole, MessageStatus, utcnow

ExportFormat = Literal["json", "markdown"]
ExportBranches = Literal["active", "all"]
EXPORT_PAGE = 500
RESULT_CHARS = 2000  # a tool result longer than this is cut in the transcript (the JSON export keeps it whole)
_RATINGS = {"up": "👍", "down": "👎"}
_SPEAKERS = {MessageRole.USER: "You", MessageRole.ASSISTANT: "Assistant"}


async def export_conversation(
    session: AsyncSession, user_id: str, conversation_id: uuid.UUID, branches: ExportBranches = "active"
) -> ConversationExport:
    """The messages of one of the user's conversations in order, in their API shape (with their versions).

    `branches`: `active` is the active branch (what `GET /api/conversations/{id}` shows), `all` every stored message
    of every branch (each with its `parent_id`), by sequence number.

    Raises:
        NotFoundError: It does not exist or belongs to another user.
    """
    conversation = await get_conversation(session, user_id, conversation_id)
    leaf = conversation.active_leaf_id if branches == "active" else None
    messages: list[Message] = []
    cursor: str | None = None
    while True:
        page, cursor = await list_messages(session, conversation.id, limit=EXPORT_PAGE, cursor=cursor, leaf=leaf)
        messages += page
        if cursor is None:
            break
    return ConversationExport.model_validate(
        conversation,
        update={
            "messages": await public_messages(session, messages, branched=conversation.active_leaf_id is not None),
            "exported_at": utcnow(),
            "branches": branches,
        },
    )


def export_filename(export: ConversationExport, export_format: ExportFormat) -> str:
    """`conversation-<title as ASCII words>-<YYYY-MM-DD>.<json|md>`, safe in a Content-Disposition header."""
    ascii_title = unicodedata.normalize("NFKD", export.title).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-")[:60].strip("-") or "untitled"
    extension = "json" if export_format == "json" else "md"
    return f"conversation-{slug}-{export.exported_at:%Y-%m-%d}.{extension}"


def content_disposition(filename: str) -> str:
    """An `attachment` Content-Disposition for a name `export_filename` made (ASCII, no quotes)."""
    return f'attachment; filename="{filename}"'


def to_markdown(export: ConversationExport) -> str:
    """A readable transcript: a heading per message with who and when, its text, tool calls, files and feedback."""
    lines = [
        f"# {_one_line(export.title)}",
        "",
        f"Exported {export.exported_at:%Y-%m-%d %H:%M} UTC · created {export.created_at:%Y-%m-%d %H:%M} UTC · "
        f"{len(export.messages)} messages",
    ]
    for message in export.messages:
        lines += ["", *_message_lines(message)]
    return "\n".join(lines) + "\n"


def _message_lines(message: MessagePublic) -> list[str]:
    speaker = _SPEAKERS[message.role]
    if message.agent:
        speaker += f" ({_one_line(message.agent)})"
    lines = [f"## {speaker} · {message.created_at:%Y-%m-%d %H:%M} UTC", ""]
    if message.content.strip():
        lines.append(message.content.strip())
    for call in message.tool_calls:
        args = json.dumps(call.args, ensure_ascii=False)
        result = json.dumps(call.result, ensure_ascii=False)
        if len(result) > RESULT_CHARS:
            result = result[: RESULT_CHARS - 1] + "…"
        lines += ["", f"- Tool `{call.name}` with `{args}` → `{result}`"]
    if message.attachments:
        names = ", ".join(f"{_one_line(a.name)} ({a.content_type}, {a.size} bytes)" for a in message.attachments)
        lines += ["", f"Attachments: {names}"]
    if message.status not in (MessageStatus.COMPLETE, MessageStatus.IN_PROGRESS):
        lines += ["", f"*Status: {message.status.value}{f' ({message.error_code})' if message.error_code else ''}*"]
    if message.feedback is not None:
        comment = f" — {_one_line(message.feedback.comment)}" if message.feedback.comment else ""
        lines += ["", f"Feedback: {_RATINGS[message.feedback.rating]} {message.feedback.rating}{comment}"]
    return lines


def _one_line(text: str) -> str:
    return " ".join(text.split())
