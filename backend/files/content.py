"""Attachments as model input: Agents SDK (Responses-style) content parts for a user message, within a byte budget.

LiteLLM turns `data:` URLs into Gemini `inline_data` parts; it drops `filename`, so names travel in text parts.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping, Sequence

from openai.types.responses import (
    ResponseInputContentParam,
    ResponseInputFileParam,
    ResponseInputImageParam,
    ResponseInputTextParam,
)

from backend.files.service import StoredFile
from backend.files.sniff import IMAGE_TYPES, TEXT_TYPES


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


def describe_for_offline_model(files: Sequence[StoredFile]) -> str:
    """One line listing the attachments by name, type and size, for the offline demo model's reply.

    Args:
        files: A message's attachments.

    Returns:
        For example `Received 2 attachments: a.png (image/png, 1.2 KB), notes.md (text/markdown, 300 B).`, or an
        empty string when there are none.
    """
    if not files:
        return ""
    noun = "attachment" if len(files) == 1 else "attachments"
    return f"Received {len(files)} {noun}: {', '.join(describe(file) for file in files)}."


def _data_url(content_type: str, data: bytes) -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"


def file_part(file: StoredFile, data: bytes) -> ResponseInputContentParam:
    """One attachment as a content part: images as images, PDFs as files, text files as text with their name.

    Args:
        file: The file's metadata.
        data: Its bytes.

    Returns:
        An `input_image`, `input_file` or `input_text` part.
    """
    if file.content_type in IMAGE_TYPES:
        return ResponseInputImageParam(type="input_image", image_url=_data_url(file.content_type, data), detail="auto")
    if file.content_type in TEXT_TYPES:
        text = data.decode("utf-8", errors="replace")
        return ResponseInputTextParam(type="input_text", text=f"Attached file {describe(file)}:\n\n{text}")
    return ResponseInputFileParam(type="input_file", file_data=_data_url(file.content_type, data), filename=file.name)


def omitted_part(file: StoredFile) -> ResponseInputTextParam:
    """The short note that stands in for an attachment left out of the history."""
    return ResponseInputTextParam(type="input_text", text=f"[attachment omitted from history: {describe(file)}]")


def user_content(
    text: str, files: Sequence[StoredFile], data: Mapping[uuid.UUID, bytes]
) -> list[ResponseInputContentParam]:
    """The content of a user message: its text, then each attachment (or a note when its bytes are not given).

    Args:
        text: What the user typed.
        files: The message's attachments in order.
        data: Bytes of the attachments to include; a file missing here becomes an "omitted" note.

    Returns:
        Content parts for `{"role": "user", "content": ...}`.
    """
    parts: list[ResponseInputContentParam] = [ResponseInputTextParam(type="input_text", text=text)]
    for file in files:
        parts.append(file_part(file, data[file.id]) if file.id in data else omitted_part(file))
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
