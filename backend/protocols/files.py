"""Files that come with a client's message, shared by the adapters: bytes inline, or one of our uploads by URL."""

from __future__ import annotations

import base64
import binascii
import re
import uuid

from backend.chat.commands import Upload
from backend.errors import InvalidInputError

# A file's URL: a `data:` URL (base64), or one of our uploads, absolute or relative.
_DATA_URL = re.compile(r"data:[^,;]*(?:;[^,;]*)*;base64,(?P<data>.*)", re.DOTALL)
_FILE_URL = re.compile(r"(?:https?://[^/]+)?/api/files/(?P<id>[0-9a-fA-F-]{36})/content")


def decode_base64(data: str) -> bytes:
    """A file's bytes from base64.

    Raises:
        InvalidInputError: It is not valid base64.
    """
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError("messages: a file's data is not valid base64") from None


def add_file_url(url: str, filename: str | None, attachments: list[uuid.UUID], uploads: list[Upload]) -> None:
    """A file by URL: bytes in a `data:` URL become an upload, our `/api/files/{id}/content` URL an attachment.

    Raises:
        InvalidInputError: Any other URL, or a `data:` URL that is not base64.
    """
    data_url = _DATA_URL.fullmatch(url)
    if data_url is not None:
        uploads.append(Upload(filename, decode_base64(data_url["data"])))
        return
    file_url = _FILE_URL.fullmatch(url)
    if file_url is None:
        raise InvalidInputError("messages: a file's url must be a base64 data: URL or /api/files/{id}/content")
    try:
        attachments.append(uuid.UUID(file_url["id"]))
    except ValueError:
        raise InvalidInputError("messages: a file part names no file") from None
