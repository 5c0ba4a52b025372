"""Where file bytes live: one small interface, two backends (a local directory, or a table in the database).

The database row in `files` is the truth. A backend stores bytes under the file's id only; names are never paths.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.errors import NotFoundError
from backend.files.models import File, FileBlob
from backend.settings import Settings

log = logging.getLogger(__name__)


class BlobMissingError(NotFoundError):
    """The row exists but its bytes do not (e.g. the local directory was wiped): answered as 404."""

    def __init__(self, file_id: uuid.UUID) -> None:
        super().__init__("The file's contents are missing.")
        log.warning("file %s has a row but no stored bytes", file_id)


@runtime_checkable
class FileStorage(Protocol):
    """The bytes of uploaded files, keyed by file id.

    `write` and `read` take the request's session so that a database backend joins its transaction: the row and the
    bytes then commit or roll back together. A backend outside the database must make `write` atomic on its own and
    undo it in `discard` when the transaction fails.
    """

    async def write(self, session: AsyncSession, file_id: uuid.UUID, data: bytes) -> None:
        """Store the bytes of a file whose row is being inserted in `session`'s transaction."""
        ...

    async def read(self, session: AsyncSession, file_id: uuid.UUID) -> bytes:
        """Return a file's bytes. Raises `BlobMissingError` if they are gone."""
        ...

    async def discard(self, file_ids: Sequence[uuid.UUID]) -> None:
        """Remove the bytes of files whose rows were deleted (or never committed). Missing ids are ignored."""
        ...

    async def remove_orphans(self, session: AsyncSession, older_than_seconds: float) -> int:
        """Remove stored bytes that have no `files` row and are older than the given age; return how many."""
        ...


class DatabaseStorage:
    """Bytes in the `file_blobs` table: every instance on the database sees them, and they commit with the row."""

    async def write(self, session: AsyncSession, file_id: uuid.UUID, data: bytes) -> None:
        """Add the blob to the session's transaction."""
        session.add(FileBlob(file_id=file_id, data=data))
        await session.flush()

    async def read(self, session: AsyncSession, file_id: uuid.UUID) -> bytes:
        """Select the blob."""
        data = (await session.exec(select(FileBlob.data).where(FileBlob.file_id == file_id))).first()
        if data is None:
            raise BlobMissingError(file_id)
        return data

    async def discard(self, file_ids: Sequence[uuid.UUID]) -> None:
        """Nothing to do: blobs go with their row (`ON DELETE CASCADE`) or with the rolled-back transaction."""

    async def remove_orphans(self, session: AsyncSession, older_than_seconds: float) -> int:
        """Nothing to do: the foreign key makes orphans impossible."""
        return 0


class LocalStorage:
    """Bytes in `<root>/<first two hex digits>/<file id hex>`, written to a temporary file and renamed into place."""

    def __init__(self, root: Path) -> None:
        """Use `root` (created on first write)."""
        self.root = root

    def path_for(self, file_id: uuid.UUID) -> Path:
        """The one place a file's bytes may be, derived from its id only."""
        return self.root / file_id.hex[:2] / file_id.hex

    async def write(self, session: AsyncSession, file_id: uuid.UUID, data: bytes) -> None:
        """Write atomically: a reader sees the whole file or none of it."""
        await asyncio.to_thread(self._write, self.path_for(file_id), data)

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    async def read(self, session: AsyncSession, file_id: uuid.UUID) -> bytes:
        """Read the file from disk."""
        try:
            return await asyncio.to_thread(self.path_for(file_id).read_bytes)
        except FileNotFoundError:
            raise BlobMissingError(file_id) from None

    async def discard(self, file_ids: Sequence[uuid.UUID]) -> None:
        """Unlink the files."""

        def _unlink() -> None:
            for file_id in file_ids:
                self.path_for(file_id).unlink(missing_ok=True)

        await asyncio.to_thread(_unlink)

    async def remove_orphans(self, session: AsyncSession, older_than_seconds: float) -> int:
        """Unlink files (and stale temporary files) with no row, e.g. left by a crash between commit and unlink."""
        cutoff = time.time() - older_than_seconds
        candidates = await asyncio.to_thread(self._old_entries, cutoff)
        ids = {file_id for file_id, _ in candidates if file_id is not None}
        known: set[uuid.UUID] = set()
        if ids:
            known = set((await session.exec(select(File.id).where(col(File.id).in_(ids)))).all())
        doomed = [path for file_id, path in candidates if file_id is None or file_id not in known]

        def _unlink() -> None:
            for path in doomed:
                path.unlink(missing_ok=True)

        await asyncio.to_thread(_unlink)
        return len(doomed)

    def _old_entries(self, cutoff: float) -> list[tuple[uuid.UUID | None, Path]]:
        entries: list[tuple[uuid.UUID | None, Path]] = []
        if not self.root.is_dir():
            return entries
        for path in self.root.glob("*/*"):
            try:
                if path.stat().st_mtime >= cutoff:
                    continue
            except FileNotFoundError:
                continue
            try:
                entries.append((uuid.UUID(hex=path.name), path))
            except ValueError:
                if path.name.startswith(".upload-"):
                    entries.append((None, path))
        return entries


def create_storage(settings: Settings) -> FileStorage:
    """Build the backend named by `FILE_STORAGE` (default: local with SQLite, database otherwise).

    Args:
        settings: Application settings.

    Returns:
        The storage backend.
    """
    if settings.file_storage_backend == "database":
        return DatabaseStorage()
    return LocalStorage(settings.file_storage_dir)
