"""The file service: upload, read, delete, limits, and the seams the chat turn uses. Plain functions, free of HTTP."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from litestar.status_codes import HTTP_413_REQUEST_ENTITY_TOO_LARGE, HTTP_415_UNSUPPORTED_MEDIA_TYPE
from sqlalchemy import exists, func
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.db import serialize_on
from backend.errors import AppError, ConflictError, InvalidInputError, NotFoundError
from backend.files.models import File, MessageFile
from backend.files.sniff import sanitize_filename, sniff_content_type
from backend.files.storage import FileStorage
from backend.models import Message, utcnow
from backend.ownership import owned
from backend.settings import Settings

log = logging.getLogger(__name__)

FILE_NOT_FOUND = "File not found."
SWEEP_BATCH = 500


class PayloadTooLargeError(AppError):
    """An upload over a size limit (`file_too_large`) or over the user's quota (`quota_exceeded`)."""

    status_code = HTTP_413_REQUEST_ENTITY_TOO_LARGE
    code = "file_too_large"


class UnsupportedFileTypeError(AppError):
    """The bytes are not one of the accepted types."""

    status_code = HTTP_415_UNSUPPORTED_MEDIA_TYPE
    code = "unsupported_file_type"


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A file's metadata, detached from any session: what the chat turn and the API work with."""

    id: uuid.UUID
    user_id: str
    name: str
    content_type: str
    size: int
    created_at: datetime

    @classmethod
    def of(cls, row: File) -> StoredFile:
        """Copy a `File` row."""
        return cls(row.id, row.user_id, row.name, row.content_type, row.size, row.created_at)


def too_large(limit: int) -> PayloadTooLargeError:
    """The 413 for an upload over `FILE_MAX_BYTES`."""
    return PayloadTooLargeError(f"The file is larger than the limit of {limit} bytes.")


async def upload_file(
    session: AsyncSession,
    storage: FileStorage,
    settings: Settings,
    user_id: str,
    filename: str | None,
    data: bytes,
    file_id: uuid.UUID | None = None,
) -> StoredFile:
    """Check an upload against every limit, store its bytes and its row atomically, and commit.

    Args:
        session: An open session (nothing pending).
        storage: The storage backend.
        settings: Limits: `file_max_bytes`, `file_quota_bytes`.
        user_id: The owner.
        filename: The client's name for the file (sanitised here, never used as a path).
        data: The whole file.
        file_id: The id to store it under (a ChatKit two-phase upload names it first); a new one when None.

    Returns:
        The stored file.

    Raises:
        PayloadTooLargeError: Over `FILE_MAX_BYTES` (`file_too_large`) or the user's quota (`quota_exceeded`).
        UnsupportedFileTypeError: The bytes are not an accepted type.
        InvalidInputError: An empty file.
        ConflictError: `file_id` names a file that exists already (anyone's).
    """
    if file_id is not None and await session.get(File, file_id) is not None:
        raise ConflictError("A file with this id exists already.", code="file_exists")
    if len(data) > settings.file_max_bytes:
        raise too_large(settings.file_max_bytes)
    if not data:
        raise InvalidInputError("The file is empty.", code="empty_file")
    name = sanitize_filename(filename)
    content_type = sniff_content_type(data, name)
    if content_type is None:
        raise UnsupportedFileTypeError(
            "Only PNG, JPEG, WebP and GIF images, PDF, plain text, Markdown and CSV files are accepted."
        )
    if settings.file_quota_bytes:
        await serialize_on(session, f"file-quota:{user_id}")  # the sum and the insert below are one step per user
        used = (await session.exec(select(func.coalesce(func.sum(File.size), 0)).where(File.user_id == user_id))).one()
        if used + len(data) > settings.file_quota_bytes:
            raise PayloadTooLargeError(
                f"This upload would exceed your storage quota of {settings.file_quota_bytes} bytes.",
                code="quota_exceeded",
            )
    row = File(id=file_id or uuid.uuid4(), user_id=user_id, name=name, content_type=content_type, size=len(data))
    session.add(row)
    try:
        await session.flush()
        await storage.write(session, row.id, data)
        await session.commit()
    except IntegrityError:  # the same chosen id, uploaded concurrently
        await session.rollback()
        raise ConflictError("A file with this id exists already.", code="file_exists") from None
    except BaseException:
        await session.rollback()
        await storage.discard([row.id])
        raise
    log.info("file stored: %s (%s, %d bytes)", row.id, content_type, len(data))
    return StoredFile.of(row)


async def get_file(session: AsyncSession, user_id: str, file_id: uuid.UUID) -> StoredFile:
    """Fetch one of the user's files.

    Raises:
        NotFoundError: If it does not exist or belongs to another user.
    """
    return StoredFile.of(await owned(session, File, file_id, user_id, FILE_NOT_FOUND))


async def read_file(
    session: AsyncSession, storage: FileStorage, user_id: str, file_id: uuid.UUID
) -> tuple[StoredFile, bytes]:
    """Fetch one of the user's files with its bytes.

    Raises:
        NotFoundError: If it does not exist or belongs to another user.
        BlobMissingError: If the row exists but the bytes are gone.
    """
    stored = await get_file(session, user_id, file_id)
    return stored, await storage.read(session, file_id)


async def delete_file(session: AsyncSession, storage: FileStorage, user_id: str, file_id: uuid.UUID) -> None:
    """Delete one of the user's files (its links to messages go with it) and commit, then drop its bytes.

    Raises:
        NotFoundError: If it does not exist or belongs to another user.
    """
    await get_file(session, user_id, file_id)
    await session.exec(delete(File).where(col(File.id) == file_id))
    await session.commit()
    await storage.discard([file_id])


# --- seams for the chat turn ---------------------------------------------------------------------------------------


async def check_message_attachments(
    session: AsyncSession,
    user_id: str,
    ids: Sequence[uuid.UUID],
    *,
    max_files: int,
    max_bytes: int,
    inline_sizes: Sequence[int] = (),
) -> None:
    """Refuse a message with too many attachments, or too many bytes of them together.

    `MESSAGE_ATTACHMENT_BYTES` keeps a turn's model input under the provider's request limit.

    Unknown and other users' ids count for nothing here; the turn refuses them (404) when it resolves them.

    Args:
        session: A session to read file sizes with.
        user_id: The sender.
        ids: The attachment ids of one message.
        max_files: `settings.files_per_message_max`.
        max_bytes: `settings.message_attachment_bytes`.
        inline_sizes: The sizes of files sent inline with the message, not stored yet (they count too).

    Raises:
        InvalidInputError: `too_many_attachments` (422).
        PayloadTooLargeError: `attachments_too_large` (413).
    """
    unique = list(dict.fromkeys(ids))  # a repeated id is one attachment
    count = len(unique) + len(inline_sizes)
    if count > max_files:
        raise InvalidInputError(
            f"attachments: at most {max_files} files per message (got {count}).", code="too_many_attachments"
        )
    total = sum(inline_sizes)
    if unique:
        query = select(func.coalesce(func.sum(File.size), 0)).where(col(File.id).in_(unique), File.user_id == user_id)
        total += (await session.exec(query)).one()
    if total > max_bytes:
        raise PayloadTooLargeError(
            f"attachments: at most {max_bytes} bytes per message together (these are {total}).",
            code="attachments_too_large",
        )


async def resolve_attachments(session: AsyncSession, user_id: str, ids: Sequence[uuid.UUID]) -> list[StoredFile]:
    """Look up a message's attachments, in the order given. Files already attached elsewhere are allowed.

    Args:
        session: An open session.
        user_id: The sender; every file must be theirs.
        ids: The attachment ids from the request (duplicates are kept once, first position wins).

    Returns:
        The files, in request order.

    Raises:
        NotFoundError: If any id is unknown or another user's.
    """
    unique = list(dict.fromkeys(ids))
    if not unique:
        return []
    rows = (await session.exec(select(File).where(col(File.id).in_(unique), File.user_id == user_id))).all()
    by_id = {row.id: StoredFile.of(row) for row in rows}
    if len(by_id) != len(unique):
        raise NotFoundError(FILE_NOT_FOUND)
    return [by_id[file_id] for file_id in unique]


async def attach(session: AsyncSession, message_id: uuid.UUID, files: Sequence[StoredFile]) -> None:
    """Link files to a message in order, in the caller's transaction (the caller commits).

    Args:
        session: The session that inserted (or holds) the message.
        message_id: The user message.
        files: From `resolve_attachments`.
    """
    for position, stored in enumerate(files):
        session.add(MessageFile(message_id=message_id, position=position, file_id=stored.id))
    await session.flush()


async def files_of_messages(
    session: AsyncSession, message_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[StoredFile]]:
    """The attachments of several messages, each list in position order (for the API and history replay).

    Args:
        session: An open session.
        message_ids: Message ids; those without attachments are absent from the result.

    Returns:
        Message id → its files.
    """
    if not message_ids:
        return {}
    query = (
        select(MessageFile.message_id, File)
        .join(File, col(File.id) == col(MessageFile.file_id))
        .where(col(MessageFile.message_id).in_(message_ids))
        .order_by(col(MessageFile.message_id), col(MessageFile.position))
    )
    result: dict[uuid.UUID, list[StoredFile]] = {}
    for message_id, row in (await session.exec(query)).all():
        result.setdefault(message_id, []).append(StoredFile.of(row))
    return result


# --- lifecycle -----------------------------------------------------------------------------------------------------


async def delete_files_only_used_by(session: AsyncSession, conversation_id: uuid.UUID) -> list[uuid.UUID]:
    """Delete the files attached in this conversation and in no other one. Call it *before* deleting the conversation.

    Runs in the caller's transaction (the caller commits). With `local` storage, pass the returned ids to
    `storage.discard` after the commit; if that never happens, the sweep removes the orphaned bytes later.

    Args:
        session: The session that will delete the conversation.
        conversation_id: The conversation about to be deleted.

    Returns:
        The ids of the deleted files.
    """
    here = select(MessageFile.file_id).join(Message, col(Message.id) == col(MessageFile.message_id))
    in_this = here.where(Message.conversation_id == conversation_id)
    elsewhere = (
        select(MessageFile.file_id)
        .join(Message, col(Message.id) == col(MessageFile.message_id))
        .where(Message.conversation_id != conversation_id, col(MessageFile.file_id) == col(File.id))
    )
    query = delete(File).where(col(File.id).in_(in_this), ~exists(elsewhere)).returning(col(File.id))
    return list((await session.exec(query)).scalars().all())


async def sweep_unattached(session: AsyncSession, storage: FileStorage, ttl_seconds: float) -> list[uuid.UUID]:
    """Delete uploads older than the TTL that no message uses, then their bytes; commits. Safe to run concurrently.

    On PostgreSQL the candidate rows are locked with `FOR UPDATE SKIP LOCKED`, so two sweeps never wait for or
    delete the same row; `DELETE ... RETURNING` reports only the rows this sweep removed. SQLite serialises writers.

    Args:
        session: An open session (nothing pending).
        storage: The storage backend.
        ttl_seconds: `FILE_UNATTACHED_TTL_SECONDS`.

    Returns:
        The ids this sweep deleted (at most `SWEEP_BATCH`).
    """
    cutoff = utcnow() - timedelta(seconds=ttl_seconds)
    candidates = (
        select(File.id)
        .where(col(File.created_at) < cutoff, ~exists().where(col(MessageFile.file_id) == col(File.id)))
        .order_by(col(File.created_at))
        .limit(SWEEP_BATCH)
        .with_for_update(skip_locked=True)
    )
    query = delete(File).where(col(File.id).in_(candidates)).returning(col(File.id))
    deleted = list((await session.exec(query)).scalars().all())
    await session.commit()
    await storage.discard(deleted)
    orphans = await storage.remove_orphans(session, ttl_seconds)
    if deleted or orphans:
        log.info("file sweep: %d unattached uploads and %d orphaned blobs removed", len(deleted), orphans)
    return deleted
