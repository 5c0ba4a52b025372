"""The conversation store: the one owner of every conversation write a turn makes, and of its commits.

One facade over small modules, each owning one seam:
- `rows`: the typed rows the modules hand each other and the turn runtime (`TurnRequest`, `BegunTurn`, `Outcome`...),
  and the retry of transient database failures;
- `lock`: the run lock's SQL (when a conversation is free, what taking and releasing it writes);
- `turns`: the turn's own rows (begin, pause and resume, finish, abandon, and the reads of where a turn stands);
- `event_log`: the SSE event log (append, read, prune) and its PostgreSQL notifications;
- `takeover`: heartbeats, the takeover of turns whose process died, and stop requests;
- `actions`: a widget action's transaction and what it changed.
The conversation rows that REST owns (rename, delete) live in `backend.conversations.store`.

`ConversationStore` builds the parts for one process and exposes their methods under one name; it adds no logic.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from backend.chat.store.actions import ActionRows
from backend.chat.store.event_log import NOTIFY_CHANNEL, NOTIFY_IDS, STOP_CHANNEL, EventLog
from backend.chat.store.lock import RunLock
from backend.chat.store.rows import (
    INTERRUPTED,
    UNSAVED,
    BegunTurn,
    ExistingTurn,
    Outcome,
    Saved,
    StoredEvent,
    TurnRequest,
)
from backend.chat.store.takeover import Takeover
from backend.chat.store.turns import TurnRows, make_title
from backend.db import Database

__all__ = [  # what the runtime and the tests use; the other rows are in `backend.chat.store.rows`
    "INTERRUPTED",
    "NOTIFY_CHANNEL",
    "NOTIFY_IDS",
    "STOP_CHANNEL",
    "UNSAVED",
    "BegunTurn",
    "ConversationStore",
    "ExistingTurn",
    "Outcome",
    "Saved",
    "StoredEvent",
    "TurnRequest",
    "make_title",
]


class ConversationStore:
    """Every conversation write of the chat runtime, on one database, for one server process (`instance_id`)."""

    def __init__(
        self,
        database: Database,
        *,
        instance_id: uuid.UUID,
        stale_after_seconds: float,
        max_turn_seconds: float,
        history_max_items: int,
    ) -> None:
        """Create the store.

        Args:
            database: Where conversations live.
            instance_id: This process's id in `instances` (its heartbeat row).
            stale_after_seconds: A lock whose owner's heartbeat is older than this may be taken over.
            max_turn_seconds: The longest a turn may run; the lock's hard cap adds a margin to it.
            history_max_items: How many recent messages to load as model input.
        """
        self.database = database
        self.instance_id = instance_id
        self.lock = RunLock(
            instance_id,
            stale_after=timedelta(seconds=stale_after_seconds),
            ttl=timedelta(seconds=max_turn_seconds + 60),
        )
        self.events = EventLog(database)
        self.is_postgres = self.events.is_postgres
        self.takeover = Takeover(database, self.lock, self.events)
        self.turns = TurnRows(
            database,
            self.lock,
            self.events,
            self.takeover,
            history_max_items=history_max_items,
        )
        self.actions = ActionRows(database, history_max_items=history_max_items)
        # The parts' methods under one name (bound methods: no logic here).
        self.begin_turn = self.turns.begin_turn
        self.paused_turn = self.turns.paused_turn
        self.resume_turn = self.turns.resume_turn
        self.finish_turn = self.turns.finish_turn
        self.close_unsaved = self.turns.close_unsaved
        self.keep_usage = self.turns.keep_usage
        self.abandon = self.turns.abandon
        self.release = self.turns.release
        self.turn_info = self.turns.turn_info
        self.message_status = self.turns.message_status
        self.running_turn = self.turns.running_turn
        self.latest_reply = self.turns.latest_reply
        self.append_events = self.events.append_events
        self.read_events = self.events.read_events
        self.last_event = self.events.last_event
        self.prune_events = self.events.prune_events
        self.heartbeat = self.takeover.heartbeat
        self.recover_stale = self.takeover.recover_stale
        self.owned_turns = self.takeover.owned_turns
        self.cancel_requests = self.takeover.cancel_requests
        self.request_stop = self.takeover.request_stop
        self.action = self.actions.action
