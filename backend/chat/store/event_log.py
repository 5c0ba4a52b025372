"""The event log: every turn's SSE events, appended in batches, read by followers, pruned once old.

On PostgreSQL a batch and its notification (`NOTIFY chat_events` with the message ids) go in one statement, so every
process's listener (`backend.chat.live`) wakes its followers as soon as the batch commits. The same module names the
stop channel (`chat_stop`) that `backend.chat.store.takeover` notifies.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

from sqlalchemy import (
    CTE,
    ColumnElement,
    Insert,
    Integer,
    Text,
    Uuid,
    bindparam,
    column,
    delete,
    exists,
    func,
    insert,
    text,
)
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col, select

from backend.chat.store.rows import StoredEvent
from backend.db import Database, json_recordset, recordset_json, table_of
from backend.models import Message, MessageStatus, TurnEvent, utcnow
from backend.storable import storable_text

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "chat_events"
STOP_CHANNEL = "chat_stop"
NOTIFY_IDS = 150
"""Message ids per notification (a payload holds at most 8000 bytes)."""

Batch = dict[uuid.UUID, list[StoredEvent]]
"""Events of any number of turns, by assistant message id."""

_TURN_EVENTS_INSERT = insert(TurnEvent)
_NOTIFY = text("SELECT pg_notify(:channel, :ids)")


def _logged(guard: CTE | None) -> Insert:
    """PostgreSQL: insert the events of a batch, the rows arriving as one JSON parameter `rows` (`log_params`).

    About 2 µs of our CPU per event, against 14 µs for `executemany`, which binds and sends each row on its own. The
    values are what `TurnEvent`'s columns would store: `data` is the event's JSON as `payload` encodes it, through the
    same text policy (`storable_text`). With a `guard`, only if it returns a row.
    """
    rows = json_recordset(
        "rows", "batch", [column("m", Uuid()), column("i", Integer()), column("t", Text()), column("d", Text())]
    )
    events = table_of(TurnEvent)
    source = sa_select(rows.c.m, rows.c.i, rows.c.t, rows.c.d, bindparam("logged_at", type_=events.c.created_at.type))
    if guard is not None:
        source = source.where(exists(guard.select()))
    return insert(events).from_select(["message_id", "id", "type", "data", "created_at"], source)


def notify_changed() -> ColumnElement[None]:
    """PostgreSQL: tell every process's listener that the turns `log_params` named have new events (on commit)."""
    return func.pg_notify(bindparam("channel"), bindparam("ids"))


def log_cte(guard: CTE) -> CTE:
    """The event log's write as part of a larger statement, done only if `guard` returns a row."""
    return _logged(guard).cte("logged")


# A batch of events and its notification as one statement. A data-modifying WITH runs to completion whatever the outer
# query reads.
_LOG_AND_NOTIFY = sa_select(notify_changed()).add_cte(_logged(None).cte("logged"))


def log_params(batch: Batch, now: datetime) -> tuple[dict[str, object], list[str]]:
    """The parameters of `_LOG_AND_NOTIFY` (or `log_cte` with `notify_changed`) for a batch.

    Returns:
        The parameters, and the message ids of any more notifications to send (a payload holds `NOTIFY_IDS`).
    """
    keys = [str(message_id) for message_id in batch]
    rows = [
        {"m": key, "i": e.id, "t": e.type, "d": storable_text(e.data)}
        for key, events in zip(keys, batch.values(), strict=True)
        for e in events
    ]
    chunks = [",".join(keys[start : start + NOTIFY_IDS]) for start in range(0, len(keys), NOTIFY_IDS)]
    params = {"rows": recordset_json(rows), "logged_at": now, "channel": NOTIFY_CHANNEL, "ids": chunks[0]}
    return params, chunks[1:]


class EventLog:
    """The `turn_events` table of one database."""

    def __init__(self, database: Database) -> None:
        """Log to `database` (notifications only on PostgreSQL)."""
        self.database = database
        self.is_postgres = database.engine.dialect.name == "postgresql"

    async def append_events(self, batch: Batch) -> None:
        """Write a batch of events of any number of turns in one transaction, and wake followers elsewhere.

        A turn whose conversation was deleted meanwhile has nowhere to log; its events are dropped.
        """
        if not batch:
            return
        try:
            await self._insert(batch)
        except IntegrityError:
            for message_id, events in batch.items():  # find the deleted one(s); keep the rest
                try:
                    await self._insert({message_id: events})
                except IntegrityError:
                    log.info("message %s was deleted during its run; its events were dropped", message_id)

    async def _insert(self, batch: Batch) -> None:
        async with self.database.engine.begin() as conn:
            await self.write(conn, batch)

    async def write(self, conn: AsyncConnection, batch: Batch) -> None:
        """Insert the events (Core, in the caller's transaction) and, on PostgreSQL, notify other processes."""
        now = utcnow()
        if not any(batch.values()):
            return
        if not self.is_postgres:
            rows = [
                {"message_id": message_id, "id": e.id, "type": e.type, "data": e.data, "created_at": now}
                for message_id, events in batch.items()
                for e in events
            ]
            await conn.execute(_TURN_EVENTS_INSERT, rows)
            return
        # Notifications are delivered on commit, to every process's listener; message ids only.
        params, more_ids = log_params(batch, now)
        await conn.execute(_LOG_AND_NOTIFY, params)
        for more in more_ids:
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

    async def last_event(self, message_id: uuid.UUID) -> StoredEvent | None:
        """A turn's last logged event (None if its log is empty)."""
        async with self.database.sessions() as session:
            row = (
                await session.exec(
                    select(TurnEvent.id, TurnEvent.type, TurnEvent.data)
                    .where(col(TurnEvent.message_id) == message_id)
                    .order_by(col(TurnEvent.id).desc())
                    .limit(1)
                )
            ).first()
        return StoredEvent(*row) if row is not None else None

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
