"""Quotas and rate limits per user, checked before any model call, shared by every process through the database.

- Tokens per UTC day and month, and USD per UTC month: sums of the user's daily totals (`usage_daily`, raised in the
  transaction that writes the ledger rows, so they are as exact as the ledger), at most 31 rows whatever the month
  held. A turn that crosses one mid-run ends after its current model call (`backend.usage.ledger.Budget`).
- Messages per minute: a counter row per user and minute, raised by one atomic `INSERT ... ON CONFLICT DO UPDATE
  ... WHERE count < limit RETURNING` (PostgreSQL and SQLite alike), so concurrent processes can never admit more
  than the limit in a window. A fixed window: up to twice the limit can pass within 60 s that straddle a boundary.
- Running turns per user (`MAX_TURNS_PER_USER`): the user's conversations whose run lock is held, in any process.

The settings give every user's limits; a `user_limits` row (`python -m backend limits set`) overrides them for one
user: NULL keeps the setting, 0 lifts the limit. Each process reloads the (small) overrides table with its heartbeat,
so an override takes effect within `HEARTBEAT_SECONDS`. A message whose user has no quota costs no statement; with
one, a single SELECT reads the usage it counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import case, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col

from backend.db import Database
from backend.errors import AppError
from backend.models import utcnow
from backend.settings import Settings
from backend.usage.models import RateWindow, UsageDaily, UserLimits
from backend.usage.records import utc_day

CONCURRENCY_RETRY_SECONDS = 5
LimitName = Literal["tokens_per_day", "tokens_per_month", "usd_per_month", "messages_per_minute", "max_turns_per_user"]
LIMIT_NAMES: tuple[LimitName, ...] = (
    "tokens_per_day",
    "tokens_per_month",
    "usd_per_month",
    "messages_per_minute",
    "max_turns_per_user",
)


Override = tuple[int | None, int | None, float | None, int | None, int | None]
"""A `user_limits` row's values, in `LIMIT_NAMES` order (None: the setting applies)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """A user's effective limits (0: none)."""

    tokens_per_day: int = 0
    tokens_per_month: int = 0
    usd_per_month: float = 0.0
    messages_per_minute: int = 0
    max_turns_per_user: int = 0

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        """Every user's limits, from the settings."""
        return cls(
            settings.tokens_per_day,
            settings.tokens_per_month,
            settings.usd_per_month,
            settings.messages_per_minute,
            settings.max_turns_per_user,
        )

    def overridden(self, values: Override) -> Limits:
        """These limits with a user's overrides (in `LIMIT_NAMES` order) applied; a None keeps the setting."""
        own = (self.tokens_per_day, self.tokens_per_month, self.usd_per_month, self.messages_per_minute)
        merged = [o if v is None else v for o, v in zip(own, values[:4], strict=True)]
        turns = self.max_turns_per_user if values[4] is None else values[4]
        return Limits(int(merged[0]), int(merged[1]), float(merged[2]), int(merged[3]), turns)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is refused: the limit, the usage counted against it, and when it resets."""

    code: Literal["quota_exceeded", "rate_limited"]
    limit_name: LimitName
    limit: float
    usage: float
    reset_at: datetime

    @property
    def message(self) -> str:
        """A sentence for the user."""
        what = {
            "tokens_per_day": "daily token quota",
            "tokens_per_month": "monthly token quota",
            "usd_per_month": "monthly spending quota",
            "messages_per_minute": "limit of messages per minute",
            "max_turns_per_user": "limit of replies running at once",
        }[self.limit_name]
        return f"You have reached your {what}; try again after {self.reset_at.isoformat(timespec='seconds')}."

    def retry_after(self, now: datetime) -> int:
        """Whole seconds until the limit resets (at least 1)."""
        return max(1, math.ceil((self.reset_at - now).total_seconds()))


@dataclass(frozen=True, slots=True)
class Budget:
    """What a turn's user may still spend when it starts (None: no limit), and the refusals to give past each."""

    tokens: int | None
    usd: float | None
    refusal: Refusal
    usd_refusal: Refusal


class LimitExceededError(AppError):
    """429: a quota or a rate limit refuses the request; the body says which, and the headers when to retry."""

    status_code = 429

    def __init__(self, refusal: Refusal, now: datetime) -> None:
        super().__init__(refusal.message, code=refusal.code)
        self.refusal = refusal
        self.details = {
            "limit_name": refusal.limit_name,
            "limit": refusal.limit,
            "usage": refusal.usage,
            "reset_at": refusal.reset_at.isoformat(),
        }
        self.headers = {"Retry-After": str(refusal.retry_after(now))}


def day_start(now: datetime) -> datetime:
    """Midnight UTC of `now`'s day."""
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def month_start(now: datetime) -> datetime:
    """Midnight UTC of the first of `now`'s month."""
    return day_start(now).replace(day=1)


def next_month(now: datetime) -> datetime:
    """Midnight UTC of the first of the month after `now`'s."""
    start = month_start(now)
    return (start + timedelta(days=32)).replace(day=1)


@dataclass(frozen=True, slots=True)
class Admission:
    """An admitted request: what its turn may spend (None: no quota applies), and whether its message was counted."""

    budget: Budget | None
    counted_in: datetime | None  # the minute window that counted the message, if one did


@dataclass(frozen=True, slots=True)
class Standing:
    """A user's limits and usage at one moment."""

    limits: Limits
    tokens_today: int
    tokens_this_month: int
    usd_this_month: float


class LimitsService:
    """Check and count a user's limits on one database."""

    def __init__(self, database: Database, settings: Settings) -> None:
        """Use `settings`' limits for every user, overridden by `user_limits` rows."""
        self.database = database
        self.defaults = Limits.of(settings)
        self.overrides: dict[str, Override] = {}

    async def refresh(self) -> None:
        """Reload every user's overrides (a small table the operator edits); the heartbeat calls this."""
        async with self.database.engine.connect() as conn:
            rows = (
                await conn.execute(select(*(getattr(UserLimits, name) for name in ("user_id", *LIMIT_NAMES))))
            ).all()
        self.overrides = {row[0]: (row[1], row[2], row[3], row[4], row[5]) for row in rows}

    def limits_of(self, user_id: str) -> Limits:
        """The user's effective limits: the settings, with the user's overrides as last refreshed."""
        override = self.overrides.get(user_id)
        return self.defaults if override is None else self.defaults.overridden(override)

    async def standing(self, user_id: str, now: datetime | None = None) -> Standing:
        """The user's effective limits and the usage they count, in one statement (none when no quota applies)."""
        now = now or utcnow()
        limits = self.limits_of(user_id)
        if not (limits.tokens_per_day or limits.tokens_per_month or limits.usd_per_month):
            return Standing(limits, 0, 0, 0.0)
        today = utc_day(now)
        statement = select(
            func.coalesce(func.sum(case((col(UsageDaily.day) == today, col(UsageDaily.total_tokens)), else_=0)), 0),
            func.coalesce(func.sum(col(UsageDaily.total_tokens)), 0),
            func.coalesce(func.sum(col(UsageDaily.cost_usd)), 0),
        ).where(col(UsageDaily.user_id) == user_id, col(UsageDaily.day) >= today.replace(day=1))
        async with self.database.engine.connect() as conn:
            row = (await conn.execute(statement)).one()
        return Standing(limits, int(row[0]), int(row[1]), float(row[2]))

    async def admit(self, user_id: str, *, message: bool) -> Admission:
        """Admit a request that will call the model, or refuse it.

        Args:
            user_id: The caller.
            message: A new chat message (counted against the messages per minute); answers to a paused turn are not.

        Returns:
            What the turn may spend before its quotas end it, and whether the message was counted.

        Raises:
            LimitExceededError: A quota is used up or a rate limit is reached (429).
        """
        now = utcnow()
        standing = await self.standing(user_id, now)
        limits = standing.limits
        refusal = _first_refusal(standing, now)
        window = now.replace(second=0, microsecond=0)
        counted = refusal is None and message and limits.messages_per_minute > 0
        if counted:
            refusal = await self._count_message(user_id, limits.messages_per_minute, window)
        if refusal is not None:
            raise LimitExceededError(refusal, now)
        return Admission(_budget(standing, now), window if counted else None)

    async def _count_message(self, user_id: str, limit: int, window: datetime) -> Refusal | None:
        dialect = postgresql if self.database.engine.dialect.name == "postgresql" else sqlite
        statement = (
            dialect.insert(RateWindow)
            .values(user_id=user_id, window_start=window, count=1)
            .on_conflict_do_update(
                index_elements=["user_id", "window_start"],
                set_={"count": RateWindow.__table__.c.count + 1},  # type: ignore[attr-defined]
                where=RateWindow.__table__.c.count < limit,  # type: ignore[attr-defined]
            )
            .returning(RateWindow.__table__.c.count)  # type: ignore[attr-defined]
        )
        async with self.database.engine.begin() as conn:
            counted = (await conn.execute(statement)).scalar_one_or_none()
        if counted is not None:
            return None
        return Refusal("rate_limited", "messages_per_minute", limit, limit, window + timedelta(minutes=1))

    async def uncount(self, user_id: str, admission: Admission) -> None:
        """Give back a message `admit` counted that started nothing (an idempotent retry of one already sent)."""
        window = admission.counted_in
        if window is None:
            return
        async with self.database.engine.begin() as conn:
            await conn.execute(
                update(RateWindow)
                .where(
                    col(RateWindow.user_id) == user_id,
                    col(RateWindow.window_start) == window,
                    col(RateWindow.count) > 0,
                )
                .values(count=col(RateWindow.count) - 1)
            )

    async def prune(self, now: datetime | None = None) -> None:
        """Delete message windows that ended more than a minute ago."""
        cutoff = (now or utcnow()) - timedelta(minutes=2)
        async with self.database.engine.begin() as conn:
            await conn.execute(RateWindow.__table__.delete().where(RateWindow.__table__.c.window_start < cutoff))  # type: ignore[attr-defined]


def _first_refusal(standing: Standing, now: datetime) -> Refusal | None:
    limits = standing.limits
    tomorrow = day_start(now) + timedelta(days=1)
    if limits.tokens_per_day and standing.tokens_today >= limits.tokens_per_day:
        return Refusal("quota_exceeded", "tokens_per_day", limits.tokens_per_day, standing.tokens_today, tomorrow)
    if limits.tokens_per_month and standing.tokens_this_month >= limits.tokens_per_month:
        return Refusal(
            "quota_exceeded", "tokens_per_month", limits.tokens_per_month, standing.tokens_this_month, next_month(now)
        )
    if limits.usd_per_month and standing.usd_this_month >= limits.usd_per_month:
        return Refusal(
            "quota_exceeded", "usd_per_month", limits.usd_per_month, round(standing.usd_this_month, 6), next_month(now)
        )
    return None


def _budget(standing: Standing, now: datetime) -> Budget | None:
    """What the turn may spend: the tightest token quota and the cost quota, each with the refusal past it."""
    limits = standing.limits
    token_left: list[tuple[int, Refusal]] = []
    if limits.tokens_per_day:
        token_left.append(
            (
                limits.tokens_per_day - standing.tokens_today,
                Refusal(
                    "quota_exceeded",
                    "tokens_per_day",
                    limits.tokens_per_day,
                    limits.tokens_per_day,
                    day_start(now) + timedelta(days=1),
                ),
            )
        )
    if limits.tokens_per_month:
        token_left.append(
            (
                limits.tokens_per_month - standing.tokens_this_month,
                Refusal(
                    "quota_exceeded",
                    "tokens_per_month",
                    limits.tokens_per_month,
                    limits.tokens_per_month,
                    next_month(now),
                ),
            )
        )
    usd_left = limits.usd_per_month - standing.usd_this_month if limits.usd_per_month else None
    if not token_left and usd_left is None:
        return None
    usd_refusal = Refusal(
        "quota_exceeded", "usd_per_month", limits.usd_per_month, limits.usd_per_month, next_month(now)
    )
    tokens, refusal = min(token_left, key=lambda pair: pair[0]) if token_left else (None, usd_refusal)
    return Budget(tokens=tokens, usd=usd_left, refusal=refusal, usd_refusal=usd_refusal)
