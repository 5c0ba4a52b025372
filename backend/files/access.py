"""A user's files as a protocol adapter reads and deletes them: each call opens its own session.

For adapters (`backend/protocols/*`), which never hold a session: the same rules as `/api/files`
(`backend.files.service`), "yours or 404" included.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from backend.db import Database
from backend.files import service
from backend.files.service import StoredFile
from backend.files.storage import FileStorage
from backend.settings import Settings


class FileAccess:
    """Read and delete the caller's files."""

    def __init__(self, database: Database, storage: FileStorage, settings: Settings) -> None:
        """Read from `database`; drop bytes from `storage`; `settings` give the upload limits."""
        self.database = database
        self.storage = storage
        self.settings = settings

    def plan_upload(self, size: int) -> uuid.UUID:
        """An id for a file the client announces (a two-phase upload); it is stored by `POST /api/files?id=`.

        Raises:
            PayloadTooLargeError: `size` is over `FILE_MAX_BYTES` (the upload itself is checked again).
        """
        if size > self.settings.file_max_bytes:
            raise service.too_large(self.settings.file_max_bytes)
        return uuid.uuid4()

    async def describe(self, user_id: str, file_ids: Sequence[uuid.UUID]) -> list[StoredFile]:
        """The user's files `file_ids`, in that order.

        Raises:
            NotFoundError: Any of them does not exist or is another user's.
        """
        async with self.database.reads() as session:
            return await service.resolve_attachments(session, user_id, file_ids)

    async def delete(self, user_id: str, file_id: uuid.UUID) -> None:
        """Delete one of the user's files (messages that had it lose the attachment).

        Raises:
            NotFoundError: It does not exist or is another user's.
        """
        async with self.database.sessions() as session:
            await service.delete_file(session, self.storage, user_id, file_id)
