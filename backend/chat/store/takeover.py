"""Takeover: heartbeats, the recovery of turns whose process died, and stop requests across processes.

Each process keeps a heartbeat row in `instances`. A run lock whose owner stopped beating is stale (see
`backend.chat.store.lock`): the next process that needs the conversation, or the periodic sweep, takes the turn over,
and its assistant message keeps the text of its logged events and becomes `interrupted`.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from sqlalchemy import delete, or_, text, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.chat.events import Done, Error, Usage, decode
from backend.chat.reply import Reply
from backend.chat.store.event_log import STOP_CHANNEL, EventLog
from backend.chat.store.lock import FREE, RunLock
from backend.chat.store.rows import INTERRUPTED, StoredEvent
from backend.conversations.service import get_conversation
from backend.db import Database
from backend.models import Conversation, Instance, Message, MessageStatus, TurnEvent, utcnow

log = logging.getLogger(__name__)

_NOTIFY_STOP = text("SELECT pg_notify(:channel, :id)")


class Takeover:
    """This process's heartbeat, and the takeover and stopping of turns wherever they run."""

    def __init__(self, database: Database, lock: RunLock, events: EventLog) -> None:
        """Act on `database` as the process `lock.instance_id`, closing taken-over turns in `events`."""
        self.database = database
        self.lock = lock
        self.events = events

    async def interrupt(
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
        # The stored parts hold the reply up to its last pause, whose segment the log ends with a `done`; what follows
        # the last `done` is what the dead run added since (maybe nothing, not even its `start`, if it died before its
        # first write). Earlier segments are in the parts already.
        events = [decode(data) for _, data in stored]
        last_end = max((i for i, event in enumerate(events) if isinstance(event, Done)), default=-1)
        reply = Reply(message.parts, message.agent)
        for event in events[last_end + 1 :]:
            if not isinstance(event, Done | Error):
                reply.add(event)
        last = stored[-1][0] if stored else 0
        finals = [
            StoredEvent.of(last + 1, error),
            StoredEvent.of(last + 2, Done(str(message.conversation_id), str(message_id), "interrupted", Usage())),
        ]
        await self.events.write(await session.connection(), {message_id: finals})
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
                    or_(col(Conversation.run_owner) != self.lock.instance_id, col(Conversation.run_owner).is_(None)),
                    self.lock.is_free(now),
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
                        self.lock.is_free(now),
                    )
                    .values(**FREE)
                    .execution_options(synchronize_session=False)
                )
                if claimed.rowcount == 1:
                    await self.interrupt(session, message_id)
                    taken += 1
                await session.commit()
        if taken:
            log.warning("took over %d turn(s) whose server process stopped", taken)
        return taken

    async def heartbeat(self) -> None:
        """Tell the other processes that this one is alive (and so are its runs)."""
        now = utcnow()
        instance_id = self.lock.instance_id
        async with self.database.sessions() as session:
            beat = await session.exec(update(Instance).where(col(Instance.id) == instance_id).values(heartbeat_at=now))
            if beat.rowcount == 0:
                session.add(Instance(id=instance_id, started_at=now, heartbeat_at=now))
            await session.exec(delete(Instance).where(col(Instance.heartbeat_at) < now - timedelta(hours=1)))
            await session.commit()

    async def owned_turns(self, message_ids: set[uuid.UUID]) -> set[uuid.UUID]:
        """Which of these turns this process still runs (holds the run lock of).

        A locking read: a takeover that is committing is waited for, so a turn it takes is never reported as owned.
        """
        async with self.database.sessions() as session:
            rows = await session.exec(
                select(Conversation.run_id)
                .where(col(Conversation.run_id).in_(message_ids), col(Conversation.run_owner) == self.lock.instance_id)
                .with_for_update(read=True)
            )
            owned = {run_id for run_id in rows.all() if run_id is not None}
            await session.commit()
        return owned

    async def cancel_requests(self) -> list[uuid.UUID]:
        """Running turns of this process that someone asked to stop (the fallback to the stop notification)."""
        async with self.database.sessions() as session:
            rows = await session.exec(
                select(Conversation.run_id).where(
                    col(Conversation.run_owner) == self.lock.instance_id, col(Conversation.run_cancel_requested)
                )
            )
            return [run_id for run_id in rows.all() if run_id is not None]

    async def request_stop(self, user_id: str, conversation_id: uuid.UUID) -> uuid.UUID | None:
        """Ask whichever process runs the conversation's turn to stop it.

        Returns:
            The running assistant message's id, or None when nothing runs.

        Raises:
            NotFoundError: The conversation does not exist or is not the caller's.
        """
        async with self.database.sessions() as session:
            conversation = await get_conversation(session, user_id, conversation_id)
            run_id = conversation.run_id
            if run_id is None:
                return None
            await session.exec(
                update(Conversation)
                .where(col(Conversation.id) == conversation_id, col(Conversation.run_id) == run_id)
                .values(run_cancel_requested=True)
            )
            if self.events.is_postgres:
                conn = await session.connection()  # a Core statement in the session's transaction
                await conn.execute(_NOTIFY_STOP, {"channel": STOP_CHANNEL, "id": str(run_id)})
            await session.commit()
            return run_id
