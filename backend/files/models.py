"""The attachment tables: uploaded files, their links to messages, and the database storage backend's blobs.

Kept out of `backend/models.py` on purpose; `alembic/env.py` and the app import this module so the tables register.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Column, ForeignKey, Index, LargeBinary
from sqlmodel import Field, SQLModel

import backend.models  # noqa: F401  (the `messages` table must be registered before the link table refers to it)
from backend.models import utcnow

NAME_MAX = 255
CONTENT_TYPE_MAX = 100


class File(SQLModel, table=True):
    """One uploaded file, owned by one user. The bytes live in the configured storage, keyed by `id` only."""

    __tablename__ = "files"  # pyright: ignore[reportAssignmentType]
    __table_args__ = (Index("ix_files_user_created", "user_id", "created_at"), Index("ix_files_created", "created_at"))

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: str = Field(max_length=255)
    name: str = Field(max_length=NAME_MAX)
    content_type: str = Field(max_length=CONTENT_TYPE_MAX)
    size: int
    created_at: datetime = Field(default_factory=utcnow)


class MessageFile(SQLModel, table=True):
    """A file attached to a message, at a position. Deleting either side removes the link."""

    __tablename__ = "message_files"  # pyright: ignore[reportAssignmentType]
    __table_args__ = (Index("ix_message_files_file", "file_id"),)

    message_id: uuid.UUID = Field(
        sa_column_args=[ForeignKey("messages.id", ondelete="CASCADE")], primary_key=True, nullable=False
    )
    position: int = Field(primary_key=True)
    file_id: uuid.UUID = Field(sa_column_args=[ForeignKey("files.id", ondelete="CASCADE")], nullable=False)


class FileBlob(SQLModel, table=True):
    """The bytes of one file, for the `database` storage backend (shared by every instance on the database)."""

    __tablename__ = "file_blobs"  # pyright: ignore[reportAssignmentType]

    file_id: uuid.UUID = Field(
        sa_column_args=[ForeignKey("files.id", ondelete="CASCADE")], primary_key=True, nullable=False
    )
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class FilePublic(SQLModel):
    """A file's metadata as the API returns it."""

    id: uuid.UUID
    name: str
    content_type: str
    size: int
    created_at: datetime
