"""Which file types we accept, decided from the bytes themselves (never from the client's claim), and safe names."""

from __future__ import annotations

import re
import unicodedata

IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"})
PDF_TYPE = "application/pdf"
TEXT_TYPES = frozenset({"text/plain", "text/markdown", "text/csv"})
SERVED_TYPES = IMAGE_TYPES | {PDF_TYPE} | {f"{text}; charset=utf-8" for text in TEXT_TYPES}
"""The `Content-Type` values `GET /api/files/{id}/content` answers with (text is always UTF-8)."""
NAME_MAX_CHARS = 200

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", PDF_TYPE),
)
# The tags the WHATWG MIME sniffing algorithm treats as HTML, plus XML/SVG prologues.
_MARKUP_START = re.compile(
    rb"^\s*<(!doctype\s+html|html|head|script|iframe|h1|div|font|table|a|style|title|b|body|br|p|!--|\?xml|svg)"
    rb"[\s>/]",
    re.IGNORECASE,
)
_TEXT_EXTENSIONS = {".md": "text/markdown", ".markdown": "text/markdown", ".csv": "text/csv"}


def sniff_content_type(data: bytes, filename: str) -> str | None:
    """Decide a file's type from its bytes.

    Binary types come from their signatures. Anything else is text only if it is valid UTF-8 without NUL bytes and
    does not start like HTML, SVG or XML; then the extension picks Markdown or CSV over plain text.

    Args:
        data: The whole file.
        filename: The (sanitised) name; only its extension is read, and only once the bytes say text.

    Returns:
        One of the accepted MIME types, or None when the file is not acceptable.
    """
    for signature, content_type in _SIGNATURES:
        if data.startswith(signature):
            return content_type
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if b"\x00" in data:
        return None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if _MARKUP_START.match(data.removeprefix(b"\xef\xbb\xbf")):
        return None
    dot = filename.rfind(".")
    return _TEXT_EXTENSIONS.get(filename[dot:].lower(), "text/plain") if dot > 0 else "text/plain"


def sanitize_filename(raw: str | None) -> str:
    """Make an uploaded name safe to display: no path parts, no control or format characters, bounded length.

    The result is only ever shown or put in a `Content-Disposition` header; storage paths come from file ids.

    Args:
        raw: The client's filename, possibly a path such as a Windows path or `../../etc/passwd`.

    Returns:
        A non-empty name of at most `NAME_MAX_CHARS` characters that keeps its extension when it is cut.
    """
    name = unicodedata.normalize("NFC", raw or "")
    name = re.split(r"[\\/]", name)[-1]
    name = "".join(" " if unicodedata.category(ch).startswith(("C", "Z")) else ch for ch in name)
    name = " ".join(name.split()).strip(" .")
    if not name:
        return "file"
    if len(name) > NAME_MAX_CHARS:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 16 and stem:
            name = f"{stem[: NAME_MAX_CHARS - len(ext) - 1].rstrip()}.{ext}"
        else:
            name = name[:NAME_MAX_CHARS]
    return name
