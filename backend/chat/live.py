"""Turns as they stream: fan-out to every follower, the batched event log, and wake-ups across processes.

A turn runs in a background task of the process that began it (`backend.chat.turn`), not in any HTTP response. Its
events go two ways at once:
- to `LiveTurn`, in memory, which every follower in this process reads without touching the database;
- to the event log, buffered here and written by one task for all turns of the process, at most every
  `EVENT_FLUSH_SECONDS` (one transaction per interval, never one statement per token).

A follower of a turn that runs in another process (or that ended) reads the log. On PostgreSQL each write sends a
`NOTIFY` with the message ids, and one `LISTEN` connection per process wakes the followers at once; without it (SQLite)
followers poll once a second. The same listener carries stop requests (`chat_stop`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Callable

import psycopg
from sqlalchemy.exc import IntegrityError

from backend import metrics, request_ids
from backend.chat.events import Done, Usage, encode, frame
from backend.chat.finish import finish_of
from backend.chat.lease import Lease
from backend.chat.store import NOTIFY_CHANNEL, STOP_CHANNEL, ConversationStore, StoredEvent
from backend.errors import is_database_unavailable
from backend.models import MessageStatus

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0


class LiveTurn:
    """The frames of one turn segment running in this process, readable by any number of followers."""

    __slots__ = ("_changed", "closed", "conversation_id", "end", "first_id", "frames", "message_id", "request_id")

    def __init__(self, conversation_id: uuid.UUID, message_id: uuid.UUID, first_id: int) -> None:
        """Open a segment whose first event will have id `first_id` (for the request now running, if any)."""
        self.conversation_id = conversation_id
        self.message_id = message_id
        self.first_id = first_id
        self.request_id = request_ids.current()
        self.frames: list[bytes] = []
        self.closed = False
        self.end: bytes | None = None
        """The segment's `done` frame, once published."""
        self._changed = asyncio.Event()

    def publish(self, data: bytes, *, end: bool = False) -> None:
        """Add the next frame (`end`: the segment's `done`) and wake the followers."""
        self.frames.append(data)
        if end:
            self.end = data
        self._wake()

    def close(self) -> None:
        """No more frames will come."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def frames_after(self, after: int) -> AsyncIterator[bytes]:
        """Every frame with an id above `after`, then the new ones as they come, until the segment closes.

        The frames published since the follower last woke are yielded as one chunk: a follower that fell behind
        (a busy worker, a slow client) catches up in one send instead of one send per frame. A follower that asked
        for more than the segment ever had (`after` past its end) gets its real `done` once it ends.
        """
        index = max(0, after - self.first_id + 1)
        while True:
            end = len(self.frames)
            if index < end:
                yield self.frames[index] if end - index == 1 else b"".join(self.frames[index:end])
                index = end
                continue  # more may have come during the send
            if self.closed:
                if index > end and self.end is not None:
                    yield self.end
                return
            await self._changed.wait()


class Hub:
    """This process's live turns, its event-log writer and its cross-process listener."""

    def __init__(self, store: ConversationStore, flush_seconds: float, dsn: str | None, lease: Lease) -> None:
        """Create the hub.

        Args:
            store: Where the event log is written and read.
            flush_seconds: The longest an event waits in memory before it is written.
            dsn: A libpq connection string for `LISTEN` (PostgreSQL), or None to poll (SQLite).
            lease: The turns this process runs; only theirs are written, and only while the lease holds.
        """
        self.store = store
        self.lease = lease
        self.flush_seconds = flush_seconds
        self.dsn = dsn
        self.live: dict[uuid.UUID, LiveTurn] = {}
        self.on_stop: Callable[[uuid.UUID], None] = lambda _message_id: None
        self._pending: dict[uuid.UUID, list[StoredEvent]] = {}
        self._has_pending = asyncio.Event()
        self._writing: dict[uuid.UUID, asyncio.Event] = {}  # turns with a batch being written, and its end
        self._waiters: weakref.WeakValueDictionary[uuid.UUID, asyncio.Event] = weakref.WeakValueDictionary()

    # --- live turns ----------------------------------------------------------------------------------------------

    def open(self, conversation_id: uuid.UUID, message_id: uuid.UUID, first_id: int) -> LiveTurn:
        """Register a turn segment that starts running in this process."""
        live = LiveTurn(conversation_id, message_id, first_id)
        self.live[message_id] = live
        return live

    def close(self, live: LiveTurn) -> None:
        """The segment ended and its events are stored: close it for its followers and forget it."""
        live.close()
        if self.live.get(live.message_id) is live:
            del self.live[live.message_id]

    # --- the event log writer ------------------------------------------------------------------------------------

    def record(self, message_id: uuid.UUID, event: StoredEvent) -> None:
        """Queue an event for the next batch."""
        self._pending.setdefault(message_id, []).append(event)
        self._has_pending.set()

    async def take_pending(self, message_id: uuid.UUID) -> list[StoredEvent]:
        """Remove and return a turn's queued events (its last write takes them along).

        A batch of the turn that is being written is waited for first (if it fails, its events are queued again and
        returned here): the turn's final save must never be visible before its earlier events are, or a follower
        that reads the log right after the end would see the `done` but not all that came before it.
        """
        while (writing := self._writing.get(message_id)) is not None:
            await writing.wait()
        return self._pending.pop(message_id, [])

    async def flush(self) -> None:
        """Write every queued event now, in one transaction; on a transient failure they wait for the next try."""
        await self.lease.confirm()  # this process may have stalled: are its turns still its own?
        batch, self._pending = self._pending, {}
        self._has_pending.clear()
        batch = {message_id: events for message_id, events in batch.items() if message_id in self.lease.held}
        if not batch:
            return
        written = asyncio.Event()
        self._writing.update(dict.fromkeys(batch, written))
        started = time.perf_counter()
        try:
            await self.store.append_events(batch)
            metrics.EVENT_LOG_FLUSH.observe(time.perf_counter() - started)
            metrics.EVENT_LOG_BATCH.observe(sum(len(events) for events in batch.values()))
        except Exception as error:
            if not is_database_unavailable(error) and not isinstance(error, IntegrityError):
                for message_id in batch:
                    with request_ids.bound(self._request_id(message_id)):
                        log.error(
                            "could not write the event log: %s; turn %s lost events", type(error).__name__, message_id
                        )
                return
            log.warning("could not write the event log (%s); will retry", type(error).__name__)
            for message_id, events in batch.items():
                self._pending[message_id] = events + self._pending.get(message_id, [])
            self._has_pending.set()
        finally:
            for message_id in batch:
                if self._writing.get(message_id) is written:
                    del self._writing[message_id]
            written.set()

    def _request_id(self, message_id: uuid.UUID) -> str | None:
        live = self.live.get(message_id)
        return live.request_id if live is not None else None

    async def run_writer(self) -> None:
        """Flush queued events at most every `flush_seconds`, for as long as the process runs."""
        while True:
            await self._has_pending.wait()
            await asyncio.sleep(self.flush_seconds)
            await self.flush()

    # --- following a turn ----------------------------------------------------------------------------------------

    async def follow(self, message_id: uuid.UUID, after: int) -> AsyncIterator[bytes]:
        """Every frame of a turn after event id `after`, then the new ones as they come, until its `done`.

        Frames come from memory while the turn runs in this process, and from the event log otherwise (earlier
        segments, another process, or a finished turn).
        """
        last = after
        live = self.live.get(message_id)
        if live is None or last < live.first_id - 1:
            async for event_id, data in self._follow_stored(message_id, last):
                last = event_id
                yield data
            live = self.live.get(message_id)
            if live is None or last < live.first_id - 1:
                return
        async for data in live.frames_after(last):
            yield data

    async def _follow_stored(self, message_id: uuid.UUID, after: int) -> AsyncIterator[tuple[int, bytes]]:
        last, last_type = after, ""
        while True:
            live = self.live.get(message_id)
            if live is not None and last >= live.first_id - 1:
                return  # the rest is live in this process
            wakeup = self._waiter(message_id)
            wakeup.clear()
            events = await self.store.read_events(message_id, last)
            for event in events:
                if live is not None and event.id >= live.first_id:
                    return
                last, last_type = event.id, event.type
                yield event.id, frame(event.id, event.data.encode())
            live = self.live.get(message_id)
            if live is not None and last >= live.first_id - 1:
                return
            if not events or last_type == "done":
                status = await self.store.message_status(message_id)
                if status != MessageStatus.IN_PROGRESS:
                    if last_type != "done":
                        yield await self._stored_end(message_id, last, status)
                    return
            if events and last_type != "done":
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_SECONDS):
                    await wakeup.wait()

    async def _stored_end(self, message_id: uuid.UUID, after: int, status: MessageStatus | None) -> tuple[int, bytes]:
        """The end of a finished turn for a follower that asked for more than its log holds (`after` past it).

        The logged `done` as it was sent, with its own id; only a log without one (a turn from before the log
        existed, or pruned) gets a `done` made from the message's status.
        """
        end = await self.store.last_event(message_id)
        if end is not None and end.type == "done" and end.id <= after:
            return end.id, frame(end.id, end.data.encode())
        done = Done("", str(message_id), finish_of(status), Usage())
        return after + 1, encode(done, after + 1)

    def _waiter(self, message_id: uuid.UUID) -> asyncio.Event:
        event = self._waiters.get(message_id)
        if event is None:
            event = asyncio.Event()
            self._waiters[message_id] = event
        return event

    def wake(self, message_id: uuid.UUID) -> None:
        """New events of this turn are in the log."""
        event = self._waiters.get(message_id)
        if event is not None:
            event.set()

    # --- PostgreSQL LISTEN ---------------------------------------------------------------------------------------

    async def run_listener(self) -> None:
        """Receive event and stop notifications from every process, reconnecting with backoff when dropped."""
        if self.dsn is None:
            return
        delay = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    await conn.execute(f"LISTEN {STOP_CHANNEL}")
                    delay = 0.5
                    metrics.LISTENER_CONNECTED.set(1)
                    for event in list(self._waiters.values()):  # notifications sent while away are lost: re-read
                        event.set()
                    while True:
                        async for note in conn.notifies(timeout=5.0):
                            self._dispatch(note.channel, note.payload)
                        await conn.execute("SELECT 1")
            except (psycopg.Error, OSError) as error:
                metrics.LISTENER_CONNECTED.set(0)
                metrics.LISTENER_RECONNECTS.inc()
                log.warning("event listener lost its database connection (%s); reconnecting", type(error).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _dispatch(self, channel: str, payload: str) -> None:
        for raw in payload.split(","):
            try:
                message_id = uuid.UUID(raw)
            except ValueError:
                continue
            if channel == STOP_CHANNEL:
                self.on_stop(message_id)
            else:
                self.wake(message_id)
