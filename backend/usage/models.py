"""The usage tables: one ledger row per model call, per-user limit overrides, and per-minute message windows.

Kept out of `backend/models.py`; `alembic/env.py` and the app import this module so the tables register. The ledger
has no foreign keys on purpose: a deleted conversation's spending still counts against its user's quota.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import BigInteger, Index, PrimaryKeyConstraint
from sqlmodel import Field, SQLModel

from backend.models import utcnow


class UsageRecord(SQLModel, table=True):
    """One model call: who, where, which model, its tokens and cost, and how it ended.

    `priced` is False when LiteLLM's cost map does not know the model (its cost is then 0). `outcome` is `ok` for a
    call that returned, else the turn's end while a call was open (`error`, `cancelled`); such a call's tokens were
    never reported and count as 0.
    """

    __tablename__ = "usage_records"  # pyright: ignore[reportAssignmentType]
    __table_args__ = (
        Index("ix_usage_records_user_created", "user_id", "created_at"),
        Index("ix_usage_records_created", "created_at"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: str = Field(max_length=255)
    conversation_id: uuid.UUID | None = Field(default=None)
    message_id: uuid.UUID | None = Field(default=None)
    agent: str | None = Field(default=None, max_length=128)
    model: str = Field(max_length=255)
    input_tokens: int = Field(default=0)
    output_tokens: int = Field(default=0)
    total_tokens: int = Field(default=0)
    cached_tokens: int = Field(default=0)
    reasoning_tokens: int = Field(default=0)
    cost_usd: float = Field(default=0.0)
    priced: bool = Field(default=True)
    outcome: str = Field(default="ok", max_length=16)
    created_at: datetime = Field(default_factory=utcnow)


class UserLimits(SQLModel, table=True):
    """One user's limits, overriding the settings: NULL keeps the setting, 0 means no limit for this user."""

    __tablename__ = "user_limits"  # pyright: ignore[reportAssignmentType]

    user_id: str = Field(max_length=255, primary_key=True)
    tokens_per_day: int | None = Field(default=None)
    tokens_per_month: int | None = Field(default=None)
    usd_per_month: float | None = Field(default=None)
    messages_per_minute: int | None = Field(default=None)
    max_turns_per_user: int | None = Field(default=None)
    updated_at: datetime = Field(default_factory=utcnow)


class RateWindow(SQLModel, table=True):
    """How many messages a user sent in one minute (`window_start`, UTC), counted atomically by every process."""

    __tablename__ = "rate_windows"  # pyright: ignore[reportAssignmentType]
    __table_args__ = (PrimaryKeyConstraint("user_id", "window_start"),)

    user_id: str = Field(max_length=255)
    window_start: datetime
    count: int = Field(default=0)


class UsageDaily(SQLModel, table=True):
    """A user's tokens and cost on one UTC day: the ledger's rows summed as they are written, for the quota checks.

    Raised in the transaction that writes the ledger rows, so a quota check sums at most 31 rows however many model
    calls the month held (summing the ledger itself grew with the month's calls: 85 ms at 100,000 rows).
    """

    __tablename__ = "usage_daily"  # pyright: ignore[reportAssignmentType]
    __table_args__ = (PrimaryKeyConstraint("user_id", "day"),)

    user_id: str = Field(max_length=255)
    day: date
    total_tokens: int = Field(default=0, sa_type=BigInteger)
    cost_usd: float = Field(default=0.0)
