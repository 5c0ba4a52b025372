"""The conversation store: the one owner of every conversation write and its commit.

A turn goes through it in three steps, each its own transaction:
1. `begin_turn`: create or lock the conversation, append the user message and an assistant message `in_progress`.
2. `append_events`: the turn's SSE events, in batches (never one statement per token).
3. `finish_turn`: the outcome, once, from whichever path ends the turn; the run lock is released in its own statement
   afterwards, whatever happened to the save.

The run lock is three columns of the conversation: `run_id` (the running assistant message), `run_owner` (the process
that runs it) and `run_expires_at` (a hard cap). Each process keeps a heartbeat row in `instances`; a lock whose owner
has stopped beating is stale, and the next process that needs the conversation (or the periodic sweep) takes the turn
over: the assistant message keeps the text of its stored events and becomes `interrupted`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import ColumnElement, Update, and_, delete, exists, insert, or_, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.chat.events import Done, Error, Event, Start, Usage, decode, event_type, payload
from backend.chat.reply import Part, Reply
from backend.db import Database
from backend.errors import ConflictError, NotFoundError
from backend.files import service as file_service
from backend.files.models import MessageFile
from backend.files.service import StoredFile
from backend.files.storage import FileStorage
from backend.models import (
    ClientMessageId,
    Conversation,
    Instance,
    Message,
    MessageRole,
    MessageStatus,
    TurnEvent,
    utcnow,
)
from backend.storable import storable_text
from backend.usage.models import UsageRecord

log = logging.getLogger(__name__)

CONVERSATION_NOT_FOUND = "Conversation not found."
MESSAGE_NOT_FOUND = "Message not found."
TITLE_CHARS = 50
NOTIFY_CHANNEL = "chat_events"
STOP_CHANNEL = "chat_stop"
INTERRUPTED = Error("interrupted", "The server running this reply stopped. Send the message again.", retryable=True)
UNSAVED = Error("internal", "The reply could not be saved.", retryable=True)
_T = TypeVar("_T")


def make_title(message: str) -> str:
    """A conversation title from its first message: one line, about 50 characters, cut at a word boundary."""
    flat = " ".join(message.split())
    if len(flat) <= TITLE_CHARS:
        return flat
    cut = flat[:TITLE_CHARS].rsplit(" ", 1)[0] if " " in flat[:TITLE_CHARS] else flat[:TITLE_CHARS]
    return cut.rstrip(" ,.;:-") + "…"


def is_transient(error: BaseException) -> bool:
    """True for database failures worth retrying: lost or refused connections, timeouts, a full pool."""
    if isinstance(error, PoolTimeoutError | OSError | TimeoutError):
        return True
    if isinstance(error, DBAPIError):
        name = type(error.orig).__name__ if error.orig is not None else ""
        return error.connection_invalidated or name in {"OperationalError", "InterfaceError", "QueryCanceled"}
    return False


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


@dataclass(frozen=True, slots=True)
class TurnRequest:
    """What a user asked for: a message, to a conversation or a new one, maybe with an idempotency key."""

    user_id: str
    message: str
    conversation_id: uuid.UUID | None
    client_message_id: uuid.UUID | None = None
    attachments: tuple[uuid.UUID, ...] = ()


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


def _released(conversation_id: uuid.UUID, message_id: uuid.UUID) -> Update:
    """The statement that frees a conversation's run lock if `message_id`'s turn still holds it."""
    return (
        update(Conversation)
        .where(col(Conversation.id) == conversation_id, col(Conversation.run_id) == message_id)
        .values(run_id=None, run_owner=None, run_expires_at=None, run_cancel_requested=False)
    )


_TURN_EVENTS_INSERT = insert(TurnEvent)
_MESSAGES_INSERT = insert(Message)
_LEDGER_INSERT = insert(UsageRecord)


def _message_row(
    message_id: uuid.UUID,
    conversation_id: uuid.UUID,
    seq: int,
    role: MessageRole,
    content: str,
    now: datetime,
) -> dict[str, object]:
    """A new message's row for a Core INSERT: a user message is complete, an assistant message `in_progress`."""
    status = MessageStatus.COMPLETE if role == MessageRole.USER else MessageStatus.IN_PROGRESS
    return {
        "id": message_id,
        "conversation_id": conversation_id,
        "seq": seq,
        "role": role,
        "content": content,
        "tool_calls": [],
        "parts": [],
        "status": status,
        "created_at": now,
    }


_NOTIFY = text("SELECT pg_notify(:channel, :ids)")
# PostgreSQL: a batch of events and its notification as one statement, the rows arriving as one JSON parameter (about
# 2 µs of our CPU per event, against 14 µs for `executemany`, which binds and sends each row on its own). The values
# are what `TurnEvent`'s columns would store: `data` is the event's JSON as `payload` encodes it, through the same
# text policy (`storable_text`). A data-modifying WITH runs to completion whatever the outer query reads.
_LOG_AND_NOTIFY = text(
    "WITH logged AS ("
    "INSERT INTO turn_events (message_id, id, type, data, created_at) "
    "SELECT m, i, t, d, :created_at "
    "FROM json_to_recordset(CAST(:rows AS json)) AS batch(m uuid, i integer, t text, d text)"
    ") SELECT pg_notify(:channel, :ids)"
)
NOTIFY_IDS = 150
"""Message ids per notification (a payload holds at most 8000 bytes)."""


def _usage_json(usage: Usage) -> dict[str, int]:
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }


class ConversationStore:
    """Every conversation write, on one database, for one server process (`instance_id`)."""

    def __init__(
        self,
        database: Database,
        *,
        instance_id: uuid.UUID,
        stale_after_seconds: float,
        max_turn_seconds: float,
        history_max_items: int,
        file_storage: FileStorage | None = None,
    ) -> None:
        """Create the store.

        Args:
            database: Where conversations live.
            instance_id: This process's id in `instances` (its heartbeat row).
            stale_after_seconds: A lock whose owner's heartbeat is older than this may be taken over.
            max_turn_seconds: The longest a turn may run; the lock's hard cap adds a margin to it.
            history_max_items: How many recent messages to load as model input.
            file_storage: Where attachment bytes live; the bytes of files deleted with a conversation are discarded
                there after the commit (None: nothing to discard beyond the database).
        """
        self.database = database
        self.instance_id = instance_id
        self.stale_after = timedelta(seconds=stale_after_seconds)
        self.lock_ttl = timedelta(seconds=max_turn_seconds + 60)
        self.history_max_items = history_max_items
        self.file_storage = file_storage
        self.is_postgres = database.engine.dialect.name == "postgresql"

    # --- the run lock --------------------------------------------------------------------------------------------

    def _lock_is_free(self, now: datetime) -> ColumnElement[bool]:
        """The lock is free, expired, or held by a process whose heartbeat stopped."""
        owner_alive = exists().where(
            col(Instance.id) == col(Conversation.run_owner), col(Instance.heartbeat_at) > now - self.stale_after
        )
        return or_(col(Conversation.run_id).is_(None), col(Conversation.run_expires_at) < now, ~owner_alive)

    def _lock_values(self, message_id: uuid.UUID, now: datetime) -> dict[str, object]:
        return {
            "run_id": message_id,
            "run_owner": self.instance_id,
            "run_expires_at": now + self.lock_ttl,
            "run_cancel_requested": False,
            "updated_at": now,
        }

    async def release(self, conversation_id: uuid.UUID, message_id: uuid.UUID) -> None:
        """Free the lock if this turn still holds it (its own transaction)."""
        async with self.database.engine.begin() as conn:
            await conn.execute(_released(conversation_id, message_id))

    # --- beginning a turn ----------------------------------------------------------------------------------------

    async def begin_turn(self, request: TurnRequest) -> BegunTurn | ExistingTurn:
        """Lock (or create) the conversation and record the user message and the `in_progress` reply, atomically.

        Raises:
            NotFoundError: The conversation does not exist or is not the caller's.
            ConflictError: A run is in progress (`run_in_progress`), or the `client_message_id` was already used
                with another message (`idempotency_conflict`).
        """
        if request.client_message_id is not None:
            existing = await self._existing(request)
            if existing is not None:
                return existing
        try:
            return await self._begin(request)
        except IntegrityError:
            if request.client_message_id is None:
                raise
            existing = await self._existing(request)  # a concurrent repeat won the race
            if existing is None:
                raise
            return existing

    async def _existing(self, request: TurnRequest) -> ExistingTurn | None:
        async with self.database.sessions() as session:
            row = (
                await session.exec(
                    select(ClientMessageId, Message.content, Message.conversation_id)
                    .join(Message, col(Message.id) == col(ClientMessageId.user_message_id))
                    .where(
                        col(ClientMessageId.user_id) == request.user_id,
                        col(ClientMessageId.client_message_id) == request.client_message_id,
                    )
                )
            ).first()
        if row is None:
            return None
        key, content, conversation_id = row
        if content != storable_text(request.message) or (
            request.conversation_id is not None and request.conversation_id != conversation_id
        ):
            raise ConflictError(
                "This client_message_id was already used for a different message.", code="idempotency_conflict"
            )
        return ExistingTurn(conversation_id=conversation_id, message_id=key.assistant_message_id)

    async def _begin(self, request: TurnRequest) -> BegunTurn:
        now = utcnow()
        message_id, user_message_id = uuid.uuid4(), uuid.uuid4()
        history: list[Message] = []
        files: dict[uuid.UUID, list[StoredFile]] = {}
        async with self.database.sessions() as session:
            try:
                attached = await file_service.resolve_attachments(session, request.user_id, request.attachments)
                conn = await session.connection()  # Core statements in the session's transaction
                if request.conversation_id is None:
                    conversation_id, title = uuid.uuid4(), make_title(request.message)
                    await conn.execute(
                        insert(Conversation).values(
                            id=conversation_id,
                            user_id=request.user_id,
                            title=title,
                            created_at=now,
                            **self._lock_values(message_id, now),
                        )
                    )
                    seq = 1
                else:
                    conversation = await self._owned(session, request.user_id, request.conversation_id)
                    conversation_id, title = conversation.id, conversation.title
                    prior_run = conversation.run_id
                    locked = await session.exec(
                        update(Conversation)
                        .where(
                            col(Conversation.id) == conversation.id,
                            col(Conversation.user_id) == request.user_id,
                            self._lock_is_free(now),
                        )
                        .values(**self._lock_values(message_id, now))
                        .execution_options(synchronize_session=False)
                    )
                    if locked.rowcount != 1:
                        raise ConflictError(
                            "A reply is already being generated in this conversation.", code="run_in_progress"
                        )
                    if prior_run is not None:
                        await self._interrupt(session, prior_run)
                    history, files = await self._history(session, conversation.id)
                    seq = history[-1].seq + 1 if history else 1
                    await self._cancel_pending_actions(session, history)
                user_row = _message_row(user_message_id, conversation_id, seq, MessageRole.USER, request.message, now)
                reply_row = _message_row(message_id, conversation_id, seq + 1, MessageRole.ASSISTANT, "", now)
                # Core INSERTs in order (no unit of work to sort out): the messages, then what references them.
                await conn.execute(_MESSAGES_INSERT, [user_row, reply_row])
                user_message = Message.model_validate(user_row)  # model input only, not added to the session
                if attached:
                    await file_service.attach(session, user_message_id, attached)
                    files[user_message_id] = attached
                if request.client_message_id is not None:
                    await conn.execute(
                        insert(ClientMessageId).values(
                            user_id=request.user_id,
                            client_message_id=request.client_message_id,
                            user_message_id=user_message_id,
                            assistant_message_id=message_id,
                            created_at=now,
                        )
                    )
                await session.commit()
            except BaseException:
                await session.rollback()
                raise
            return BegunTurn(
                user_id=request.user_id,
                conversation_id=conversation_id,
                title=title,
                user_message_id=user_message_id,
                message_id=message_id,
                history=[*history, user_message],
                created=request.conversation_id is None,
                files=files,
            )

    async def _history(
        self, session: AsyncSession, conversation_id: uuid.UUID
    ) -> tuple[list[Message], dict[uuid.UUID, list[StoredFile]]]:
        """The latest messages, oldest first, and their attachments.

        Whether a message has attachments comes with it (an EXISTS on the link table's primary key), so a
        conversation without any costs no extra query.
        """
        has_files = exists().where(col(MessageFile.message_id) == col(Message.id))
        recent = await session.exec(
            select(Message, has_files)
            .where(Message.conversation_id == conversation_id)
            .order_by(col(Message.seq).desc())
            .limit(self.history_max_items)
        )
        rows = list(reversed(recent.all()))
        history = [message for message, _ in rows]
        with_files = [message.id for message, flagged in rows if flagged]
        if not with_files:
            return history, {}
        by_message = await file_service.files_of_messages(session, with_files)
        return history, {message_id: by_message[message_id] for message_id in with_files if message_id in by_message}

    async def _owned(self, session: AsyncSession, user_id: str, conversation_id: uuid.UUID) -> Conversation:
        conversation = await session.get(Conversation, conversation_id)
        if conversation is None or conversation.user_id != user_id:
            raise NotFoundError(CONVERSATION_NOT_FOUND)
        return conversation

    async def _cancel_pending_actions(self, session: AsyncSession, history: Sequence[Message]) -> None:
        """A new user message cancels the approvals and client tools a paused reply still waits for."""
        for message in history:
            if message.status != MessageStatus.REQUIRES_ACTION:
                continue
            parts = [
                {**p, "decision": "cancelled"}
                if p.get("type") == "approval" and p.get("decision") is None
                else {**p, "result": {"error": "cancelled"}}
                if p.get("type") == "client_tool" and p.get("result") is None
                else p
                for p in message.parts
            ]
            await session.exec(
                update(Message)
                .where(col(Message.id) == message.id)
                .values(status=MessageStatus.CANCELLED, parts=parts, run_state=None)
            )
            message.status, message.parts, message.run_state = MessageStatus.CANCELLED, parts, None

    # --- resuming a paused turn ---------------------------------------------------------------------------------

    async def paused_turn(self, user_id: str, conversation_id: uuid.UUID) -> PausedTurn:
        """The conversation's reply that waits for approvals or client-tool results.

        Raises:
            NotFoundError: The conversation does not exist or is not the caller's.
            ConflictError: Nothing waits for an answer (`nothing_pending`).
        """
        async with self.database.sessions() as session:
            conversation = await self._owned(session, user_id, conversation_id)
            message = (
                await session.exec(
                    select(Message)
                    .where(Message.conversation_id == conversation_id, Message.role == MessageRole.ASSISTANT)
                    .order_by(col(Message.seq).desc())
                    .limit(1)
                )
            ).first()
            if message is None or message.status != MessageStatus.REQUIRES_ACTION or not message.run_state:
                raise ConflictError("Nothing in this conversation waits for an answer.", code="nothing_pending")
            last_event = (
                await session.exec(
                    select(TurnEvent.id)
                    .where(col(TurnEvent.message_id) == message.id)
                    .order_by(col(TurnEvent.id).desc())
                    .limit(1)
                )
            ).first()
            return PausedTurn(
                user_id=user_id,
                conversation_id=conversation_id,
                message_id=message.id,
                title=conversation.title,
                parts=list(message.parts),
                agent=message.agent,
                run_state=dict(message.run_state),
                last_event_id=last_event or 0,
            )

    async def resume_turn(self, paused: PausedTurn) -> None:
        """Take the run lock for a paused reply and mark it `in_progress` again, atomically.

        Raises:
            ConflictError: Another run holds the conversation (`run_in_progress`), or another request answered first
                (`already_answered`).
        """
        now = utcnow()
        async with self.database.sessions() as session:
            try:
                locked = await session.exec(
                    update(Conversation)
                    .where(col(Conversation.id) == paused.conversation_id, self._lock_is_free(now))
                    .values(**self._lock_values(paused.message_id, now))
                    .execution_options(synchronize_session=False)
                )
                if locked.rowcount != 1:
                    raise ConflictError(
                        "A reply is already being generated in this conversation.", code="run_in_progress"
                    )
                flipped = await session.exec(
                    update(Message)
                    .where(col(Message.id) == paused.message_id, col(Message.status) == MessageStatus.REQUIRES_ACTION)
                    .values(status=MessageStatus.IN_PROGRESS)
                )
                if flipped.rowcount != 1:
                    raise ConflictError("These answers were already given.", code="already_answered")
                await session.commit()
            except BaseException:
                await session.rollback()
                raise

    # --- widget actions ------------------------------------------------------------------------------------------

    async def apply_action(
        self, user_id: str, conversation_id: uuid.UUID, widgets: dict[str, dict[str, object]], reply: str | None
    ) -> uuid.UUID | None:
        """Store what a widget action changed: every stored copy of its widgets, and its short reply as a message.

        Returns:
            The id of the assistant message holding the reply, or None without a reply.
        """
        now = utcnow()
        async with self.database.sessions() as session:
            await self._owned(session, user_id, conversation_id)
            recent = (
                await session.exec(
                    select(Message)
                    .where(Message.conversation_id == conversation_id)
                    .order_by(col(Message.seq).desc())
                    .limit(self.history_max_items)
                )
            ).all()
            for message in recent:
                if not any(p.get("type") == "widget" and p.get("id") in widgets for p in message.parts):
                    continue
                parts = [
                    {**p, "widget": widgets[p["id"]]} if p.get("type") == "widget" and p.get("id") in widgets else p
                    for p in message.parts
                ]
                await session.exec(update(Message).where(col(Message.id) == message.id).values(parts=parts))
            message_id = None
            if reply:
                message_id = uuid.uuid4()
                session.add(
                    Message(
                        id=message_id,
                        conversation_id=conversation_id,
                        seq=(recent[0].seq + 1) if recent else 1,
                        role=MessageRole.ASSISTANT,
                        content=reply,
                        parts=[{"type": "text", "text": reply}],
                        created_at=now,
                    )
                )
                await session.exec(
                    update(Conversation).where(col(Conversation.id) == conversation_id).values(updated_at=now)
                )
            await session.commit()
            return message_id

    # --- the event log -------------------------------------------------------------------------------------------

    async def append_events(self, batch: dict[uuid.UUID, list[StoredEvent]]) -> None:
        """Write a batch of events of any number of turns in one transaction, and wake followers elsewhere.

        A turn whose conversation was deleted meanwhile has nowhere to log; its events are dropped.
        """
        if not batch:
            return
        try:
            await self._insert_events(batch)
        except IntegrityError:
            for message_id, events in batch.items():  # find the deleted one(s); keep the rest
                try:
                    await self._insert_events({message_id: events})
                except IntegrityError:
                    log.info("message %s was deleted during its run; its events were dropped", message_id)

    async def _insert_events(self, batch: dict[uuid.UUID, list[StoredEvent]]) -> None:
        async with self.database.engine.begin() as conn:
            await self._write_events(conn, batch)

    async def _write_events(self, conn: AsyncConnection, batch: dict[uuid.UUID, list[StoredEvent]]) -> None:
        """Insert the events (Core, in the caller's transaction) and, on PostgreSQL, notify other processes."""
        now = utcnow()
        if not any(batch.values()):
            return
        if not self.is_postgres:
            params = [
                {"message_id": message_id, "id": e.id, "type": e.type, "data": e.data, "created_at": now}
                for message_id, events in batch.items()
                for e in events
            ]
            await conn.execute(_TURN_EVENTS_INSERT, params)
            return
        keys = [str(message_id) for message_id in batch]
        rows = [
            {"m": key, "i": e.id, "t": e.type, "d": storable_text(e.data)}
            for key, events in zip(keys, batch.values(), strict=True)
            for e in events
        ]
        # Notifications are delivered on commit, to every process's listener; message ids only.
        chunks = [",".join(keys[start : start + NOTIFY_IDS]) for start in range(0, len(keys), NOTIFY_IDS)]
        encoded = json.dumps(rows, ensure_ascii=False)
        await conn.execute(
            _LOG_AND_NOTIFY, {"rows": encoded, "created_at": now, "channel": NOTIFY_CHANNEL, "ids": chunks[0]}
        )
        for more in chunks[1:]:
            await conn.execute(_NOTIFY, {"channel": NOTIFY_CHANNEL, "ids": more})

    async def read_events(self, message_id: uuid.UUID, after: int) -> list[StoredEvent]:
        """A turn's logged events with ids above `after`, in order."""
        async with self.database.sessions() as session:
            rows = await session.exec(
                select(TurnEvent.id, TurnEvent.type, TurnEvent.data)
                .where(col(TurnEvent.message_id) == message_id, col(TurnEvent.id) > after)
                .order_by(col(TurnEvent.id))
            )
            return [StoredEvent(i, t, d) for i, t, d in rows.all()]

    async def prune_events(self, older_than: timedelta) -> int:
        """Delete the event logs of finished turns begun more than `older_than` ago; the messages stay.

        Returns:
            How many events were deleted.
        """
        finished = select(Message.id).where(
            col(Message.created_at) < utcnow() - older_than,
            col(Message.status).not_in([MessageStatus.IN_PROGRESS, MessageStatus.REQUIRES_ACTION]),
        )
        async with self.database.sessions() as session:
            result = await session.exec(delete(TurnEvent).where(col(TurnEvent.message_id).in_(finished)))
            await session.commit()
            return int(result.rowcount or 0)

    # --- ending a turn -------------------------------------------------------------------------------------------

    async def finish_turn(
        self,
        conversation_id: uuid.UUID,
        message_id: uuid.UUID,
        outcome: Outcome,
        events: Sequence[StoredEvent],
        *,
        retry_seconds: float,
    ) -> bool:
        """Write a turn's outcome and its last events once, then release its lock, whatever happens to the save.

        Idempotent: only a message still `in_progress` is written, so a second call (from another path) is a no-op.
        Transient database failures are retried with backoff for up to `retry_seconds` while the reply waits in
        memory.

        Returns:
            False if the outcome could not be stored (the caller tells the user; `abandon` finishes the message later).
        """
        saved = released = False
        try:
            await self._retrying(
                lambda: self._write_outcome(conversation_id, message_id, outcome, events),
                retry_seconds,
                "save the reply",
            )
            saved = released = True  # the release is the last statement of the same transaction
        except IntegrityError:
            log.info("conversation %s was deleted during its run; the reply was dropped", conversation_id)
            saved = True
        except Exception as error:
            log.error("could not save the reply of conversation %s: %s", conversation_id, type(error).__name__)
        finally:
            if not released:  # whatever happened to the save, in a statement (and transaction) of its own
                try:
                    await self._retrying(lambda: self.release(conversation_id, message_id), 2.0, "release the run lock")
                except Exception as error:
                    log.warning("could not release the run lock of %s: %s", conversation_id, type(error).__name__)
        return saved

    async def _write_outcome(
        self, conversation_id: uuid.UUID, message_id: uuid.UUID, outcome: Outcome, events: Sequence[StoredEvent]
    ) -> None:
        reply = outcome.reply
        async with self.database.engine.begin() as conn:  # Core: no unit of work on the hot path
            if events:
                await self._write_events(conn, {message_id: list(events)})
            await conn.execute(
                update(Message)
                .where(col(Message.id) == message_id, col(Message.status) == MessageStatus.IN_PROGRESS)
                .values(
                    status=outcome.status,
                    content=reply.text,
                    parts=reply.parts(),
                    tool_calls=reply.tool_calls(),
                    agent=reply.agent,
                    error_code=outcome.error_code,
                    usage=_usage_json(outcome.usage),
                    items=outcome.items,
                    run_state=outcome.run_state,
                )
            )
            if outcome.ledger:
                await conn.execute(_LEDGER_INSERT, outcome.ledger)
            await conn.execute(_released(conversation_id, message_id))

    async def _retrying(self, attempt: Callable[[], Awaitable[_T]], seconds: float, what: str) -> _T:
        deadline = time.monotonic() + seconds
        delay = 0.2
        while True:
            try:
                return await attempt()
            except Exception as error:
                if not is_transient(error) or time.monotonic() + delay > deadline:
                    raise
                log.warning("could not %s (%s); retrying in %.1f s", what, type(error).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 3.0)

    async def abandon(self, conversation_id: uuid.UUID, message_id: uuid.UUID) -> None:
        """Finish a turn whose outcome could not be saved: keep its logged text, mark it failed, free the lock."""
        async with self.database.sessions() as session:
            await self._interrupt(session, message_id, status=MessageStatus.ERROR, error=UNSAVED)
            await session.commit()
        await self.release(conversation_id, message_id)

    # --- takeover of turns whose process died --------------------------------------------------------------------

    async def _interrupt(
        self,
        session: AsyncSession,
        message_id: uuid.UUID,
        *,
        status: MessageStatus = MessageStatus.INTERRUPTED,
        error: Error = INTERRUPTED,
    ) -> None:
        """Close a turn that nobody runs any more from its logged events (in the caller's transaction)."""
        message = await session.get(Message, message_id)
        if message is None or message.status != MessageStatus.IN_PROGRESS:
            return
        rows = await session.exec(
            select(TurnEvent.id, TurnEvent.data)
            .where(col(TurnEvent.message_id) == message_id)
            .order_by(col(TurnEvent.id))
        )
        stored = rows.all()
        reply = Reply(message.parts, message.agent)
        segment_start = 0
        for event_id, data in stored:
            event = decode(data)
            if isinstance(event, Start):
                segment_start = event_id
            if segment_start and not isinstance(event, Done | Error):
                reply.add(event)
        last = stored[-1][0] if stored else 0
        finals = [
            StoredEvent.of(last + 1, error),
            StoredEvent.of(last + 2, Done(str(message.conversation_id), str(message_id), "interrupted", Usage())),
        ]
        await self._write_events(await session.connection(), {message_id: finals})
        await session.exec(
            update(Message)
            .where(col(Message.id) == message_id, col(Message.status) == MessageStatus.IN_PROGRESS)
            .values(
                status=status,
                content=reply.text,
                parts=reply.parts(),
                tool_calls=reply.tool_calls(),
                agent=reply.agent,
                error_code=error.code,
                items=None,
            )
        )

    async def recover_stale(self) -> int:
        """Take over every turn whose process stopped: interrupt its message and free its conversation.

        Safe to run from several processes at once: each takeover is a conditional UPDATE of the lock.

        Returns:
            How many turns were taken over.
        """
        now = utcnow()
        async with self.database.sessions() as session:
            rows = await session.exec(
                select(Conversation.id, Conversation.run_id).where(
                    col(Conversation.run_id).is_not(None),
                    or_(col(Conversation.run_owner) != self.instance_id, col(Conversation.run_owner).is_(None)),
                    self._lock_is_free(now),
                )
            )
            stale = rows.all()
        taken = 0
        for conversation_id, message_id in stale:
            if message_id is None:
                continue
            async with self.database.sessions() as session:
                claimed = await session.exec(
                    update(Conversation)
                    .where(
                        col(Conversation.id) == conversation_id,
                        col(Conversation.run_id) == message_id,
                        self._lock_is_free(now),
                    )
                    .values(run_id=None, run_owner=None, run_expires_at=None, run_cancel_requested=False)
                    .execution_options(synchronize_session=False)
                )
                if claimed.rowcount == 1:
                    await self._interrupt(session, message_id)
                    taken += 1
                await session.commit()
        if taken:
            log.warning("took over %d turn(s) whose server process stopped", taken)
        return taken

    async def heartbeat(self) -> None:
        """Tell the other processes that this one is alive (and so are its runs)."""
        now = utcnow()
        async with self.database.sessions() as session:
            beat = await session.exec(
                update(Instance).where(col(Instance.id) == self.instance_id).values(heartbeat_at=now)
            )
            if beat.rowcount == 0:
                session.add(Instance(id=self.instance_id, started_at=now, heartbeat_at=now))
            await session.exec(delete(Instance).where(col(Instance.heartbeat_at) < now - timedelta(hours=1)))
            await session.commit()

    async def cancel_requests(self) -> list[uuid.UUID]:
        """Running turns of this process that someone asked to stop (the fallback to the stop notification)."""
        async with self.database.sessions() as session:
            rows = await session.exec(
                select(Conversation.run_id).where(
                    col(Conversation.run_owner) == self.instance_id, col(Conversation.run_cancel_requested)
                )
            )
            return [run_id for run_id in rows.all() if run_id is not None]

    # --- reading and stopping turns ------------------------------------------------------------------------------

    async def turn_info(self, user_id: str, message_id: uuid.UUID) -> TurnInfo:
        """Where one of the user's assistant messages stands.

        Raises:
            NotFoundError: No such assistant message, or it is another user's.
        """
        async with self.database.sessions() as session:
            row = (
                await session.exec(
                    select(Message.conversation_id, Message.status, Conversation.run_id)
                    .join(Conversation, col(Conversation.id) == col(Message.conversation_id))
                    .where(
                        col(Message.id) == message_id,
                        col(Message.role) == MessageRole.ASSISTANT,
                        col(Conversation.user_id) == user_id,
                    )
                )
            ).first()
        if row is None:
            raise NotFoundError(MESSAGE_NOT_FOUND)
        conversation_id, status, run_id = row
        return TurnInfo(conversation_id, message_id, MessageStatus(status), running=run_id == message_id)

    async def message_status(self, message_id: uuid.UUID) -> MessageStatus | None:
        """The status of a message (None if it was deleted)."""
        async with self.database.sessions() as session:
            status = (await session.exec(select(Message.status).where(col(Message.id) == message_id))).first()
        return MessageStatus(status) if status is not None else None

    async def request_stop(self, user_id: str, conversation_id: uuid.UUID) -> uuid.UUID | None:
        """Ask whichever process runs the conversation's turn to stop it.

        Returns:
            The running assistant message's id, or None when nothing runs.

        Raises:
            NotFoundError: The conversation does not exist or is not the caller's.
        """
        async with self.database.sessions() as session:
            conversation = await self._owned(session, user_id, conversation_id)
            run_id = conversation.run_id
            if run_id is None:
                return None
            await session.exec(
                update(Conversation)
                .where(col(Conversation.id) == conversation_id, col(Conversation.run_id) == run_id)
                .values(run_cancel_requested=True)
            )
            if self.is_postgres:
                await session.exec(  # type: ignore[call-overload]
                    text("SELECT pg_notify(:channel, :id)"), params={"channel": STOP_CHANNEL, "id": str(run_id)}
                )
            await session.commit()
            return run_id

    async def latest_reply(self, user_id: str, conversation_id: uuid.UUID) -> tuple[uuid.UUID, MessageStatus] | None:
        """The conversation's newest assistant message and its status, or None if it has none."""
        async with self.database.sessions() as session:
            await self._owned(session, user_id, conversation_id)
            row = (
                await session.exec(
                    select(Message.id, Message.status)
                    .where(col(Message.conversation_id) == conversation_id, col(Message.role) == MessageRole.ASSISTANT)
                    .order_by(col(Message.seq).desc())
                    .limit(1)
                )
            ).first()
        return (row[0], MessageStatus(row[1])) if row is not None else None

    # --- REST writes ---------------------------------------------------------------------------------------------

    async def rename_conversation(self, user_id: str, conversation_id: uuid.UUID, title: str) -> Conversation:
        """Set a conversation's title.

        Raises:
            NotFoundError: If it does not exist or belongs to another user.
        """
        async with self.database.sessions() as session:
            conversation = await self._owned(session, user_id, conversation_id)
            conversation.title = title
            conversation.updated_at = utcnow()
            session.add(conversation)
            await session.commit()
            await session.refresh(conversation)  # as stored (see backend.storable)
            return conversation

    async def delete_conversation(self, user_id: str, conversation_id: uuid.UUID) -> None:
        """Delete a conversation and the files attached only in it; the database cascades to its messages and logs.

        The files go in the same transaction; their bytes in `local` storage are discarded after the commit (the
        sweep removes any that a crash leaves behind).

        Raises:
            NotFoundError: If it does not exist or belongs to another user.
        """
        async with self.database.sessions() as session:
            await self._owned(session, user_id, conversation_id)
            file_ids = await file_service.delete_files_only_used_by(session, conversation_id)
            result = await session.exec(
                delete(Conversation).where(
                    and_(col(Conversation.id) == conversation_id, col(Conversation.user_id) == user_id)
                )
            )
            if result.rowcount == 0:  # deleted concurrently
                await session.rollback()
                raise NotFoundError(CONVERSATION_NOT_FOUND)
            await session.commit()
        if file_ids and self.file_storage is not None:
            await self.file_storage.discard(file_ids)
        if file_ids:
            log.info("conversation %s deleted with %d file(s) only it used", conversation_id, len(file_ids))
