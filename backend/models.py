"""All tables, with their Base/Create/Update/Public variants (the full-stack-fastapi-template layout)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import field_validator, model_validator
from pydantic_core import PydanticCustomError
from sqlalchemy import Column, ForeignKey, Index, PrimaryKeyConstraint, String, UniqueConstraint
from sqlmodel import Field, SQLModel

from backend.storable import SafeJSON, SafeString, SafeText

TITLE_MAX = 200
NOTES_MAX = 4000

REQUEST_BODY = SQLModel.model_config | {"extra": "forbid"}
"""The config of a JSON request body: an unknown field is a 422 that names it, never silently ignored."""


def utcnow() -> datetime:
    """Return the current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


def _trimmed(value: str | None) -> str | None:
    return value.strip() if isinstance(value, str) else value


def _no_nulls(patch: SQLModel, names: tuple[str, ...]) -> None:
    """A PATCH body may omit these fields but not send them as null."""
    for name in names:
        if name in patch.model_fields_set and getattr(patch, name) is None:
            raise ValueError(f"{name} may be omitted but not null")


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
    """Where an assistant message stands. User messages are always complete.

    `in_progress` while its run goes on; `requires_action` while the run is paused for the user (a tool approval or a
    client-side tool); `interrupted` when the process running it died and another one took the turn over.
    """

    COMPLETE = "complete"
    CANCELLED = "cancelled"
    ERROR = "error"
    IN_PROGRESS = "in_progress"
    REQUIRES_ACTION = "requires_action"
    INTERRUPTED = "interrupted"


# --- conversations -------------------------------------------------------------------------------------------------


class ConversationBase(SQLModel):
    """Fields a client may see and set."""

    title: str = Field(default="New conversation", min_length=1, max_length=TITLE_MAX, sa_type=SafeString(TITLE_MAX))


class Conversation(ConversationBase, table=True):
    """A chat thread owned by one user.

    `run_id` (the running assistant message), `run_owner` (the process running it) and `run_expires_at` are the
    cross-process run lock; `run_cancel_requested` asks the owner to stop the run.
    """

    __tablename__ = "conversations"  # pyright: ignore[reportAssignmentType]
    __table_args__ = (Index("ix_conversations_user_updated", "user_id", "updated_at", "id"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: str = Field(max_length=255)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    run_id: uuid.UUID | None = Field(default=None)
    run_expires_at: datetime | None = Field(default=None)
    run_owner: uuid.UUID | None = Field(default=None)
    run_cancel_requested: bool = Field(default=False)
    archived: bool = Field(default=False)
    active_leaf_id: uuid.UUID | None = Field(
        default=None, description="The last message of the active branch (null: the conversation has no messages)."
    )


class ConversationUpdate(SQLModel):
    """PATCH body: rename, archive or unarchive (at least one field; omitted fields stay as they are).

    Unknown fields are refused (422 naming them), never silently ignored.
    """

    model_config = REQUEST_BODY

    title: str | None = Field(default=None, min_length=1, max_length=TITLE_MAX)
    archived: bool | None = Field(default=None, description="Hide from the default list (`?archived=true` shows).")

    _trim = field_validator("title", mode="before")(_trimmed)
    _bool = field_validator("archived", mode="before")(_real_bool)

    @model_validator(mode="after")
    def _some_change(self) -> ConversationUpdate:
        _no_nulls(self, ("title", "archived"))
        if not self.model_fields_set & {"title", "archived"}:
            raise ValueError("send a title, archived, or both")
        return self


class ConversationPublic(ConversationBase):
    """A conversation as the API returns it."""

    id: uuid.UUID
    archived: bool = False
    created_at: datetime
    updated_at: datetime


class TextRange(SQLModel):
    """Characters `start` (included) to `end` (excluded) of a text."""

    start: int = Field(ge=0)
    end: int = Field(ge=0)


class ConversationSummary(ConversationPublic):
    """A list item: the conversation plus a short preview of its last message.

    In a search (`?q=`), `snippet` is a short passage of the best-matching message (or of the title when only the
    title matched) and `snippet_highlights` the matched words in it; outside a search they are null and empty.
    """

    preview: str | None = None
    snippet: str | None = None
    snippet_highlights: list[TextRange] = Field(default_factory=list)


class ConversationsPublic(SQLModel):
    """One page of conversations."""

    data: list[ConversationSummary]
    next_cursor: str | None = None


# --- messages ------------------------------------------------------------------------------------------------------


class Message(SQLModel, table=True):
    """One user or assistant message. `seq` is the order within its conversation (never order by time).

    The messages of a conversation form a tree: `parent_id` is the message this one follows (null for a first
    message). Siblings are versions: an edited user message, a regenerated reply. The conversation's `active_leaf_id`
    names the branch shown and replayed to the model (see `backend.conversations.tree`).
    """

    __tablename__ = "messages"  # pyright: ignore[reportAssignmentType]
    __table_args__ = (
        UniqueConstraint("conversation_id", "seq", name="uq_messages_conversation_seq"),
        Index("ix_messages_parent", "parent_id"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    conversation_id: uuid.UUID = Field(
        sa_column_args=[ForeignKey("conversations.id", ondelete="CASCADE")], nullable=False
    )
    seq: int
    parent_id: uuid.UUID | None = Field(default=None)
    role: MessageRole = Field(sa_type=String(16))
    content: str = Field(default="", sa_type=SafeText)
    tool_calls: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(SafeJSON, nullable=False))
    parts: list[dict[str, Any]] = Field(
        default_factory=list,
        sa_column=Column(SafeJSON, nullable=False),
        description="The reply as ordered typed parts (text, thinking, tool calls, widgets, approvals, client tools).",
    )
    status: MessageStatus = Field(default=MessageStatus.COMPLETE, sa_type=String(16))
    error_code: str | None = Field(default=None, max_length=64)
    agent: str | None = Field(default=None, max_length=128, sa_type=SafeString(128))
    usage: dict[str, int] | None = Field(default=None, sa_column=Column(SafeJSON, nullable=True))
    items: list[dict[str, Any]] | None = Field(
        default=None,
        sa_column=Column(SafeJSON, nullable=True),
        description="Agent SDK input items that replay this turn to the model (assistant messages only).",
    )
    run_state: dict[str, Any] | None = Field(
        default=None,
        sa_column=Column(SafeJSON, nullable=True),
        description="The Agents SDK RunState of a run paused for the user (status requires_action).",
    )
    created_at: datetime = Field(default_factory=utcnow)


class TurnEvent(SQLModel, table=True):
    """One SSE event of an assistant message's turn, in order: the log that `GET /chatkit/{id}/stream` replays."""

    __tablename__ = "turn_events"  # pyright: ignore[reportAssignmentType]
    __table_args__ = (PrimaryKeyConstraint("message_id", "id", name="pk_turn_events"),)

    message_id: uuid.UUID = Field(sa_column_args=[ForeignKey("messages.id", ondelete="CASCADE")], nullable=False)
    id: int
    type: str = Field(sa_type=String(32))
    data: str = Field(sa_type=SafeText)
    created_at: datetime = Field(default_factory=utcnow)


class ClientMessageId(SQLModel, table=True):
    """A client-chosen message id (idempotency key), scoped to its user, and the turn it started."""

    __tablename__ = "client_message_ids"  # pyright: ignore[reportAssignmentType]
    __table_args__ = (PrimaryKeyConstraint("user_id", "client_message_id", name="pk_client_message_ids"),)

    user_id: str = Field(max_length=255)
    client_message_id: uuid.UUID
    user_message_id: uuid.UUID = Field(sa_column_args=[ForeignKey("messages.id", ondelete="CASCADE")], nullable=False)
    assistant_message_id: uuid.UUID
    created_at: datetime = Field(default_factory=utcnow)


class Instance(SQLModel, table=True):
    """A running server process; its heartbeat tells the others whether its runs are still alive."""

    __tablename__ = "instances"  # pyright: ignore[reportAssignmentType]

    id: uuid.UUID = Field(primary_key=True)
    started_at: datetime = Field(default_factory=utcnow)
    heartbeat_at: datetime = Field(default_factory=utcnow)


class ToolCallPublic(SQLModel):
    """A tool call the assistant made, with its result once it ran."""

    id: str
    name: str
    args: dict[str, Any] = Field(default_factory=dict)
    result: Any = None


class AttachmentPublic(SQLModel):
    """A file attached to a user message (its bytes: `GET /api/files/{id}/content`)."""

    id: uuid.UUID
    name: str
    content_type: str
    size: int


class MessagePublic(SQLModel):
    """A message as the API returns it. `parts` is the reply in order; `content` its joined text."""

    id: uuid.UUID
    seq: int
    parent_id: uuid.UUID | None = Field(default=None, description="The message this one follows (null: the first).")
    sibling_ids: list[uuid.UUID] = Field(
        default_factory=list,
        description="The versions of this message (itself included), oldest first: the messages with its parent.",
    )
    sibling_index: int = Field(default=0, description="Its place in `sibling_ids` (0-based; shown as 1 of N).")
    sibling_count: int = Field(default=1, description="How many versions there are (`len(sibling_ids)`).")
    role: MessageRole
    content: str
    parts: list[dict[str, Any]] = Field(default_factory=list)
    tool_calls: list[ToolCallPublic]
    status: MessageStatus
    error_code: str | None = None
    agent: str | None = None
    usage: dict[str, int] | None = None
    attachments: list[AttachmentPublic] = Field(
        default_factory=list, description="The files sent with a user message, in order."
    )
    created_at: datetime


class BranchSwitch(SQLModel):
    """PUT body of `/api/conversations/{id}/branch`: show the branch through this message."""

    model_config = REQUEST_BODY

    message_id: uuid.UUID = Field(
        description="Any message of the conversation; the active branch becomes the path through it to its newest "
        "descendant (a sibling's id switches to that version)."
    )


class StopPublic(SQLModel):
    """The answer to a stop request: the reply it concerns and where it now stands."""

    message_id: uuid.UUID | None = Field(description="The assistant message that was running (or the latest one).")
    status: MessageStatus | None = None
    stopped: bool = Field(description="False when nothing was running.")
    detail: str


class ConversationDetail(ConversationPublic):
    """A conversation with one page of the messages of its active branch, oldest first.

    `active_message_id` is the assistant message whose turn is running now (rejoin it with
    `GET /chatkit/{message_id}/stream`), or null. `active_leaf_id` is the last message of the active branch
    (switch branches with `PUT /api/conversations/{id}/branch`).
    """

    active_message_id: uuid.UUID | None = None
    active_leaf_id: uuid.UUID | None = None
    messages: list[MessagePublic]
    next_cursor: str | None = None


# --- tasks ---------------------------------------------------------------------------------------------------------


class TaskBase(SQLModel):
    """Fields shared by every task variant."""

    title: str = Field(min_length=1, max_length=TITLE_MAX, sa_type=SafeString(TITLE_MAX))
    notes: str | None = Field(default=None, max_length=NOTES_MAX)


class TaskCreate(TaskBase):
    """POST body. Unknown fields are refused (422 naming them)."""

    model_config = REQUEST_BODY

    completed: bool = False

    _trim = field_validator("title", "notes", mode="before")(_trimmed)
    _bool = field_validator("completed", mode="before")(_real_bool)


class TaskUpdate(SQLModel):
    """PATCH body: every field optional; unknown fields are refused (422 naming them)."""

    model_config = REQUEST_BODY

    title: str | None = Field(default=None, min_length=1, max_length=TITLE_MAX)
    notes: str | None = Field(default=None, max_length=NOTES_MAX)
    completed: bool | None = None

    _trim = field_validator("title", "notes", mode="before")(_trimmed)
    _bool = field_validator("completed", mode="before")(_real_bool)

    @model_validator(mode="after")
    def _no_nulls(self) -> TaskUpdate:
        _no_nulls(self, ("title", "completed"))
        return self


class Task(TaskBase, table=True):
    """A to-do item owned by one user; the agent's tools manage these too."""

    __tablename__ = "tasks"  # pyright: ignore[reportAssignmentType]
    __table_args__ = (Index("ix_tasks_user_created", "user_id", "created_at", "id"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: str = Field(max_length=255)
    notes: str | None = Field(default=None, sa_type=SafeText)
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


class StreamTicket(SQLModel, table=True):
    """A short-lived, single-use ticket to rejoin one turn's stream without an `Authorization` header.

    Only the SHA-256 of the ticket is stored; redeeming deletes the row, so a ticket works once (in any process).
    """

    __tablename__ = "stream_tickets"  # pyright: ignore[reportAssignmentType]

    id: str = Field(primary_key=True, max_length=64)
    user_id: str = Field(max_length=255)
    message_id: uuid.UUID = Field(sa_column_args=[ForeignKey("messages.id", ondelete="CASCADE")], nullable=False)
    expires_at: datetime
