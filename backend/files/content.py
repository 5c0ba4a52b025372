"""Attachments as model input: Agents SDK (Responses-style) content parts for a user message, within a byte budget.

LiteLLM turns `data:` URLs into Gemini `inline_data` parts; it drops `filename`, so every attachment is introduced by
a text part that names it (`Attached file <name> (<type>, <size>):`); text files carry their content in that part.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from openai.types.responses import (
    ResponseInputContentParam,
    ResponseInputFileParam,
    ResponseInputImageParam,
    ResponseInputTextParam,
)

from backend.db import Database
from backend.files.service import StoredFile
from backend.files.sniff import IMAGE_TYPES, TEXT_TYPES
from backend.files.storage import BlobMissingError, FileStorage

LABEL_PREFIX = "Attached file "


@dataclass(frozen=True, slots=True)
class Attachment:
    """One attachment of a message as model input: its metadata, and its bytes (None: left out, a note instead)."""

    file: StoredFile
    data: bytes | None


def human_size(size: int) -> str:
    """`532 B`, `12.3 KB`, `4.0 MB` (powers of 1024)."""
    value = float(size)
    for unit in ("B", "KB", "MB"):
        if value < 1024 or unit == "MB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def describe(file: StoredFile) -> str:
    """`name (type, size)`."""
    return f"{file.name} ({file.content_type}, {human_size(file.size)})"


def label(file: StoredFile) -> str:
    """The text that introduces an attachment to the model: `Attached file <name> (<type>, <size>):`."""
    return f"{LABEL_PREFIX}{describe(file)}:"


def attached_descriptions(content: object) -> list[str]:
    """The attachments a user message's content carries, as `name (type, size)`, read back from their labels.

    For the offline demo model, which sees only the model input. The first part (what the user typed) is skipped.

    Args:
        content: The `content` of a user input item: a string, or a list of content parts.

    Returns:
        One description per attachment, in order; empty for plain text.
    """
    if not isinstance(content, list):
        return []
    found = []
    for part in content[1:]:
        if not isinstance(part, dict) or part.get("type") != "input_text":
            continue
        first_line = str(part.get("text", "")).split("\n", 1)[0]
        if first_line.startswith(LABEL_PREFIX) and first_line.endswith("):"):
            found.append(first_line[len(LABEL_PREFIX) : -1])
    return found


def _data_url(content_type: str, data: bytes) -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"


def file_parts(file: StoredFile, data: bytes) -> list[ResponseInputContentParam]:
    """One attachment as content parts: its label, then the image or PDF; a text file's content follows its label.

    Args:
        file: The file's metadata.
        data: Its bytes.

    Returns:
        `input_text` (label) + `input_image` or `input_file`, or one `input_text` with label and content.
    """
    if file.content_type in TEXT_TYPES:
        text = data.decode("utf-8", errors="replace")
        return [ResponseInputTextParam(type="input_text", text=f"{label(file)}\n\n{text}")]
    url = _data_url(file.content_type, data)
    introduction = ResponseInputTextParam(type="input_text", text=label(file))
    if file.content_type in IMAGE_TYPES:
        return [introduction, ResponseInputImageParam(type="input_image", image_url=url, detail="auto")]
    return [introduction, ResponseInputFileParam(type="input_file", file_data=url, filename=file.name)]


def omitted_part(file: StoredFile) -> ResponseInputTextParam:
    """The short note that stands in for an attachment left out of the history."""
    return ResponseInputTextParam(type="input_text", text=f"[attachment omitted from history: {describe(file)}]")


def user_content(text: str, attachments: Sequence[Attachment]) -> list[ResponseInputContentParam]:
    """The content of a user message: its text (if any), then each attachment (or a note when its bytes are left out).

    Args:
        text: What the user typed.
        attachments: The message's attachments in order.

    Returns:
        Content parts for `{"role": "user", "content": ...}`.
    """
    parts: list[ResponseInputContentParam] = [ResponseInputTextParam(type="input_text", text=text)] if text else []
    for attachment in attachments:
        if attachment.data is None:
            parts.append(omitted_part(attachment.file))
        else:
            parts.extend(file_parts(attachment.file, attachment.data))
    return parts


def history_selection(turns: Sequence[Sequence[StoredFile]], budget_bytes: int) -> set[uuid.UUID]:
    """Pick which earlier attachments to resend: newest first, while their sizes fit in the budget.

    Selection stops at the first attachment that does not fit, so an old file never displaces a newer one.

    Args:
        turns: Each earlier user message's attachments, oldest message first.
        budget_bytes: `HISTORY_ATTACHMENT_BYTES` (sizes of the stored files, before base64).

    Returns:
        The ids to load and include; the rest become notes via `user_content`.
    """
    chosen: set[uuid.UUID] = set()
    spent = 0
    for files in reversed(turns):
        for file in reversed(files):
            if file.id in chosen:
                continue
            if spent + file.size > budget_bytes:
                return chosen
            spent += file.size
            chosen.add(file.id)
    return chosen


async def load_attachments(
    database: Database,
    storage: FileStorage,
    files: Mapping[uuid.UUID, Sequence[StoredFile]],
    current_message_id: uuid.UUID,
    budget_bytes: int,
) -> dict[uuid.UUID, list[Attachment]]:
    """Read the bytes a turn's model input needs: all of the new message's files, and earlier ones within the budget.

    Opens a session only when some message has attachments. A file whose bytes vanished (deleted meanwhile) becomes
    a note rather than failing the turn.

    Args:
        database: Where `database` storage keeps bytes.
        storage: The storage backend.
        files: Message id -> its attachments, oldest message first (from the conversation store).
        current_message_id: The new user message; its files are always sent.
        budget_bytes: `HISTORY_ATTACHMENT_BYTES`, for the earlier messages' files (see `history_selection`).

    Returns:
        Message id -> its attachments with bytes (or None where left out); empty when nothing is attached.
    """
    if not files:
        return {}
    earlier = [message_files for message_id, message_files in files.items() if message_id != current_message_id]
    resend = history_selection(earlier, budget_bytes)
    wanted = {f.id for f in files.get(current_message_id, ())} | resend
    data: dict[uuid.UUID, bytes] = {}
    async with database.sessions() as session:
        for file_id in wanted:
            try:
                data[file_id] = await storage.read(session, file_id)
            except BlobMissingError:
                continue
    return {
        message_id: [
            Attachment(f, data.get(f.id) if message_id == current_message_id or f.id in resend else None)
            for f in message_files
        ]
        for message_id, message_files in files.items()
    }
