"""All tables, with their Base/Create/Update/Public variants (the full-stack-fastapi-template layout)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import field_validator, model_validator
from pydantic_core import PydanticCustomError
from sqlalchemy import JSON, Column, ForeignKey, Index, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

TITLE_MAX = 200
NOTES_MAX = 4000


def utcnow() -> datetime:
    """Return the current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


def _trimmed(value: str | None) -> str | None:
    return value.strip() if isinstance(value, str) else value


def _real_bool(value: object) -> object:
    # Litestar validates bodies with strict=False, overriding field-level strict: 0 and "yes" would pass as bools.
    if value is not None and not isinstance(value, bool):
        raise PydanticCustomError("bool_parsing", "Input should be a valid boolean, unable to interpret input")
    return value


class MessageRole(StrEnum):
    """Who wrote a message."""

    USER = "user"
    ASSISTANT = "assistant"


class MessageStatus(StrEnum):
    """How a message ended. User messages are always complete."""

    COMPLETE = "complete"
    CANCELLED = "cancelled"
    ERROR = "error"


# --- conversations -------------------------------------------------------------------------------------------------


class ConversationBase(SQLModel):
    """Fields a client may see and set."""

    title: str = Field(default="New conversation", min_length=1, max_length=TITLE_MAX)


class Conversation(ConversationBase, table=True):
    """A chat thread owned by one user. `run_id`/`run_expires_at` are the cross-worker run lock."""

    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_user_updated", "user_id", "updated_at", "id"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: str = Field(max_length=255)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    run_id: uuid.UUID | None = Field(default=None)
    run_expires_at: datetime | None = Field(default=None)


class ConversationUpdate(SQLModel):
    """PATCH body: rename."""

    title: str = Field(min_length=1, max_length=TITLE_MAX)

    _trim = field_validator("title", mode="before")(_trimmed)


class ConversationPublic(ConversationBase):
    """A conversation as the API returns it."""

    id: uuid.UUID
    created_at: datetime
    updated_at: datetime


class ConversationSummary(ConversationPublic):
    """A list item: the conversation plus a short preview of its last message."""

    preview: str | None = None


class ConversationsPublic(SQLModel):
    """One page of conversations."""

    data: list[ConversationSummary]
    next_cursor: str | None = None


# --- messages ------------------------------------------------------------------------------------------------------


class Message(SQLModel, table=True):
    """One user or assistant message. `seq` is the order within its conversation (never order by time)."""

    __tablename__ = "messages"
    __table_args__ = (UniqueConstraint("conversation_id", "seq", name="uq_messages_conversation_seq"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    conversation_id: uuid.UUID = Field(
        sa_column_args=[ForeignKey("conversations.id", ondelete="CASCADE")], nullable=False
    )
    seq: int
    role: MessageRole = Field(sa_type=String(16))
    content: str = Field(default="", sa_type=Text)
    tool_calls: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    status: MessageStatus = Field(default=MessageStatus.COMPLETE, sa_type=String(16))
    error_code: str | None = Field(default=None, max_length=64)
    usage: dict[str, int] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    items: list[dict[str, Any]] | None = Field(
        default=None,
        sa_column=Column(JSON, nullable=True),
        description="Agent SDK input items that replay this turn to the model (assistant messages only).",
    )
    created_at: datetime = Field(default_factory=utcnow)


class ToolCallPublic(SQLModel):
    """A tool call the assistant made, with its result once it ran."""

    id: str
    name: str
    args: dict[str, Any] = Field(default_factory=dict)
    result: Any = None


class MessagePublic(SQLModel):
    """A message as the API returns it."""

    id: uuid.UUID
    seq: int
    role: MessageRole
    content: str
    tool_calls: list[ToolCallPublic]
    status: MessageStatus
    error_code: str | None = None
    usage: dict[str, int] | None = None
    created_at: datetime


class ConversationDetail(ConversationPublic):
    """A conversation with one page of its messages, oldest first."""

    messages: list[MessagePublic]
    next_cursor: str | None = None


# --- tasks ---------------------------------------------------------------------------------------------------------


class TaskBase(SQLModel):
    """Fields shared by every task variant."""

    title: str = Field(min_length=1, max_length=TITLE_MAX)
    notes: str | None = Field(default=None, max_length=NOTES_MAX)


class TaskCreate(TaskBase):
    """POST body."""

    completed: bool = False

    _trim = field_validator("title", "notes", mode="before")(_trimmed)
    _bool = field_validator("completed", mode="before")(_real_bool)


class TaskUpdate(SQLModel):
    """PATCH body: every field optional."""

    title: str | None = Field(default=None, min_length=1, max_length=TITLE_MAX)
    notes: str | None = Field(default=None, max_length=NOTES_MAX)
    completed: bool | None = None

    _trim = field_validator("title", "notes", mode="before")(_trimmed)
    _bool = field_validator("completed", mode="before")(_real_bool)

    @model_validator(mode="after")
    def _no_nulls(self) -> TaskUpdate:
        for name in ("title", "completed"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} may be omitted but not null")
        return self


class Task(TaskBase, table=True):
    """A to-do item owned by one user; the agent's tools manage these too."""

    __tablename__ = "tasks"
    __table_args__ = (Index("ix_tasks_user_created", "user_id", "created_at", "id"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: str = Field(max_length=255)
    notes: str | None = Field(default=None, sa_type=Text)
    completed: bool = Field(default=False)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class TaskPublic(TaskBase):
    """A task as the API and the agent's tools return it."""

    id: uuid.UUID
    completed: bool
    created_at: datetime
    updated_at: datetime


class TasksPublic(SQLModel):
    """One page of tasks."""

    data: list[TaskPublic]
    next_cursor: str | None = None
