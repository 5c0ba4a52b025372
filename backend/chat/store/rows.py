"""What the store's modules hand each other and the turn runtime: typed rows of a turn, and the retry of a write."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from backend.chat.events import Error, Event, Usage, event_type, payload
from backend.chat.pause import Part
from backend.chat.reply import Reply
from backend.errors import is_database_unavailable
from backend.files.service import StoredFile
from backend.models import Message, MessageStatus

log = logging.getLogger(__name__)

INTERRUPTED = Error("interrupted", "The server running this reply stopped. Send the message again.", retryable=True)
UNSAVED = Error("internal", "The reply could not be saved.", retryable=True)
_T = TypeVar("_T")
Saved = Literal["saved", "lost", "unsaved"]
"""How a final save went: stored (or nothing to store: the conversation was deleted), the turn no longer this
process's (another took it over), or not stored (the database failed)."""


class TurnLostError(Exception):
    """This process no longer runs the turn: another process took it over while this one was stalled."""


async def retrying(attempt: Callable[[], Awaitable[_T]], seconds: float, what: str) -> _T:
    """Run `attempt`, retrying transient database failures with backoff for up to `seconds`."""
    deadline = time.monotonic() + seconds
    delay = 0.2
    while True:
        try:
            return await attempt()
        except Exception as error:
            if not is_database_unavailable(error) or time.monotonic() + delay > deadline:
                raise
            log.warning("could not %s (%s); retrying in %.1f s", what, type(error).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 3.0)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One logged SSE event: its id within the message's turn, its type and its JSON."""

    id: int
    type: str
    data: str

    @classmethod
    def of(cls, event_id: int, event: Event) -> StoredEvent:
        """Log form of an event."""
        return cls(event_id, event_type(event), payload(event).decode())


class TurnAdmission(Protocol):
    """The caller's checks and counts for a new turn, run first in the transaction that begins it.

    They are rolled back with it: a turn that does not begin counts nothing.
    """

    async def admit(self, conn: AsyncConnection, lock_key: str | None) -> bool:
        """Check and count in `conn`'s transaction; raise to refuse the turn.

        Args:
            conn: The turn's transaction.
            lock_key: A key to serialise on (`backend.db.serialize_on`) in the same round trip, if it can.

        Returns:
            Whether `lock_key` is now held by the transaction.
        """
        ...


@dataclass(frozen=True, slots=True)
class TurnRequest:
    """What a user asked for: a message, to a conversation or a new one, maybe with an idempotency key."""

    user_id: str
    message: str
    conversation_id: uuid.UUID | None
    client_message_id: uuid.UUID | None = None
    attachments: tuple[uuid.UUID, ...] = ()
    create_missing: bool = False
    """Create the conversation under `conversation_id` if no conversation has that id (a client-chosen chat id)."""
    edit_of: uuid.UUID | None = None
    """`message` is a new version of this user message: a sibling of it, after the same parent."""
    regenerate: uuid.UUID | None = None
    """Answer a user message again instead of adding `message`: this user message, or the one this reply answers (the
    nil UUID: the active leaf). The new reply is a sibling of the old ones, which stay stored."""
    max_running: int = 0
    """The most turns the user may have running at once, in all processes, this one included (0: no limit)."""
    admission: TurnAdmission | None = None
    """Quotas and rate limits checked and counted in the turn's own transaction (not for an idempotent repeat)."""


@dataclass(slots=True)
class BegunTurn:
    """A turn that now holds its conversation's run lock, with the history its model input is built from."""

    user_id: str
    conversation_id: uuid.UUID
    title: str
    user_message_id: uuid.UUID
    message_id: uuid.UUID
    history: list[Message]
    created: bool
    files: dict[uuid.UUID, list[StoredFile]] = field(default_factory=dict)
    """Attachments of the messages in `history`, oldest message first (messages without any are absent)."""


@dataclass(frozen=True, slots=True)
class ExistingTurn:
    """A repeated request (same `client_message_id`): the turn it already started."""

    conversation_id: uuid.UUID
    message_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class PausedTurn:
    """A reply paused for the user, with what its continuation needs."""

    user_id: str
    conversation_id: uuid.UUID
    message_id: uuid.UUID
    title: str
    parts: list[Part]
    agent: str | None
    run_state: dict[str, object]
    last_event_id: int


@dataclass(slots=True)
class Outcome:
    """How a turn ended: everything `finish_turn` writes to the assistant message."""

    status: MessageStatus
    reply: Reply
    error_code: str | None = None
    usage: Usage = field(default_factory=Usage)
    items: list[dict[str, object]] | None = None
    run_state: dict[str, object] | None = None
    ledger: list[dict[str, object]] = field(default_factory=list)  # `usage_records` rows, one per model call


@dataclass(frozen=True, slots=True)
class TurnInfo:
    """Where an assistant message's turn stands, for rejoining and stopping it."""

    conversation_id: uuid.UUID
    message_id: uuid.UUID
    status: MessageStatus
    running: bool
