"""The run lock: three columns of the conversation that say which turn runs it, in which process, until when.

`run_id` is the running assistant message, `run_owner` the process that runs it (its heartbeat row in `instances`)
and `run_expires_at` a hard cap. A lock is free when nobody holds it, when it expired, or when its owner stopped
beating (stale): the next process that needs the conversation takes it (see `backend.chat.store.takeover`).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import CTE, BindParameter, ColumnElement, Select, Update, bindparam, exists, func, or_, select, update
from sqlmodel import col

from backend.db import table_of
from backend.models import Conversation, Instance


class RunLock:
    """The lock's SQL for one process: when it is free, and what taking it writes."""

    def __init__(self, instance_id: uuid.UUID, *, stale_after: timedelta, ttl: timedelta) -> None:
        """Describe this process's locks: its id, when another owner counts as gone, and the hard cap of a lock."""
        self.instance_id = instance_id
        self.stale_after = stale_after
        self.ttl = ttl

    def is_free(self, now: datetime) -> ColumnElement[bool]:
        """The lock is free, expired, or held by a process whose heartbeat stopped."""
        return _free(now, now - self.stale_after)

    def running_params(self, user_id: str, now: datetime) -> dict[str, object]:
        """The parameters of `RUNNING_TURNS` for `user_id` at `now`."""
        return {"user_id": user_id, "now": now, "stale_before": now - self.stale_after}

    def taken(self, message_id: uuid.UUID, now: datetime) -> dict[str, object]:
        """The conversation's values once `message_id`'s turn holds the lock."""
        return {
            "run_id": message_id,
            "run_owner": self.instance_id,
            "run_expires_at": now + self.ttl,
            "run_cancel_requested": False,
            "updated_at": now,
        }


def _free(
    now: datetime | BindParameter[datetime], stale_before: datetime | BindParameter[datetime]
) -> ColumnElement[bool]:
    owner_alive = exists().where(
        col(Instance.id) == col(Conversation.run_owner), col(Instance.heartbeat_at) > stale_before
    )
    return or_(col(Conversation.run_id).is_(None), col(Conversation.run_expires_at) < now, ~owner_alive)


RUNNING_TURNS: Select[int] = (
    select(func.count())
    .select_from(Conversation)
    .where(col(Conversation.user_id) == bindparam("user_id"), ~_free(bindparam("now"), bindparam("stale_before")))
)
"""How many of a user's conversations a live turn holds (`RunLock.running_params`); built once, not per turn."""


FREE: dict[str, object] = {"run_id": None, "run_owner": None, "run_expires_at": None, "run_cancel_requested": False}
"""The lock's columns when nobody holds it."""


def release_cte(guard: CTE) -> CTE:
    """The release as part of a larger statement, done only if `guard` returns a row.

    It frees the lock of conversation `:freed_conversation_id` if the turn of `:message_id` still holds it.
    """
    conversations = table_of(Conversation)
    return (
        update(conversations)
        .where(
            conversations.c.id == bindparam("freed_conversation_id"),
            conversations.c.run_id == bindparam("message_id"),
            exists(guard.select()),
        )
        .values(FREE)
        .cte("freed")
    )


def released(conversation_id: uuid.UUID, message_id: uuid.UUID) -> Update:
    """The statement that frees a conversation's run lock if `message_id`'s turn still holds it."""
    return (
        update(Conversation)
        .where(col(Conversation.id) == conversation_id, col(Conversation.run_id) == message_id)
        .values(**FREE)
    )
