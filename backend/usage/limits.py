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
so an override takes effect within `HEARTBEAT_SECONDS`. A message whose user has no limit costs no statement; with
limits, one statement on PostgreSQL reads the usage the quotas count and counts the message if no quota refuses it
(`tests/bench/quota_cost.py` measures it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import Boolean, DateTime, Select, String, and_, bindparam, case, func, literal, or_, select, true
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import ReturningInsert
from sqlmodel import col

from backend.db import Database, advisory_lock
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
    locked: bool = False  # the admission's statement took the lock it was asked to take


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

    async def admit(
        self, user_id: str, *, message: bool, conn: AsyncConnection | None = None, lock_key: str | None = None
    ) -> Admission:
        """Admit a request that will call the model, or refuse it.

        The usage its quotas count is read and its message counted in one statement on PostgreSQL (two on SQLite); a
        user with no limit that applies costs no statement.

        Args:
            user_id: The caller.
            message: A new chat message (counted against the messages per minute); answers to a paused turn are not.
            conn: The transaction to count in (a new turn's, so that a turn that does not begin counts nothing); its
                own transaction if None.
            lock_key: On PostgreSQL, also take this transaction-level lock (`backend.db.serialize_on`) in the same
                statement (with `conn` only).

        Returns:
            What the turn may spend before its quotas end it, whether the message was counted, and whether
            `lock_key` is held.

        Raises:
            LimitExceededError: A quota is used up or a rate limit is reached (429).
        """
        now = utcnow()
        limits = self.limits_of(user_id)
        quotas = bool(limits.tokens_per_day or limits.tokens_per_month or limits.usd_per_month)
        count = message and limits.messages_per_minute > 0
        if not (quotas or count):
            return Admission(None, None)
        today = utc_day(now)
        window = now.replace(second=0, microsecond=0)
        params = {
            "user_id": user_id,
            "today": today,
            "month_start": today.replace(day=1),
            "window_start": window,
            "count_message": count,
            "tokens_per_day": limits.tokens_per_day,
            "tokens_per_month": limits.tokens_per_month,
            "usd_per_month": limits.usd_per_month,
            "messages_per_minute": limits.messages_per_minute,
            "lock_key": lock_key,
        }
        if conn is None:
            async with self.database.engine.begin() as own:
                used, counted, locked = await _admit(own, params, limits, count)
        else:
            used, counted, locked = await _admit(conn, params, limits, count)
        standing = Standing(limits, *used)
        refusal = _first_refusal(standing, now)
        if refusal is None and count and counted is None:
            refusal = Refusal(
                "rate_limited",
                "messages_per_minute",
                limits.messages_per_minute,
                limits.messages_per_minute,
                window + timedelta(minutes=1),
            )
        if refusal is not None:
            raise LimitExceededError(refusal, now)
        return Admission(_budget(standing, now) if quotas else None, window if count else None, locked)

    def gate(self, user_id: str) -> Gate:
        """A new message's admission, for the turn store to run in the transaction that begins its turn."""
        return Gate(self, user_id)

    async def prune(self, now: datetime | None = None) -> None:
        """Delete message windows that ended more than a minute ago."""
        cutoff = (now or utcnow()) - timedelta(minutes=2)
        async with self.database.engine.begin() as conn:
            await conn.execute(RateWindow.__table__.delete().where(RateWindow.__table__.c.window_start < cutoff))  # type: ignore[attr-defined]


def _count_upsert(insert: postgresql.Insert | sqlite.Insert) -> ReturningInsert[int]:
    """Count a message in its user's minute window unless the window already holds the limit; RETURNING the count."""
    table = RateWindow.__table__  # type: ignore[attr-defined]
    upsert = insert.on_conflict_do_update(
        index_elements=["user_id", "window_start"],
        set_={"count": table.c.count + 1},
        where=table.c.count < bindparam("messages_per_minute"),
    )
    return upsert.returning(table.c.count)


# The usage a user's quotas count: this month's daily totals (at most 31 rows of the primary key).
_USED: Select[int, int, float] = select(
    func.coalesce(
        func.sum(case((col(UsageDaily.day) == bindparam("today"), col(UsageDaily.total_tokens)), else_=0)), 0
    ).label("tokens_today"),
    func.coalesce(func.sum(col(UsageDaily.total_tokens)), 0).label("tokens_month"),
    func.coalesce(func.sum(col(UsageDaily.cost_usd)), 0).label("usd_month"),
).where(col(UsageDaily.user_id) == bindparam("user_id"), col(UsageDaily.day) >= bindparam("month_start"))

_COUNT_SQLITE = _count_upsert(
    sqlite.insert(RateWindow).values(user_id=bindparam("user_id"), window_start=bindparam("window_start"), count=1)
)


def _admit_postgres(*, locking: bool) -> Select[int, int, float, int | None]:
    """PostgreSQL's admission in one statement: the usage, and the message counted only if no quota refuses it.

    `locking` also takes the transaction-level advisory lock on `lock_key` (what `backend.db.serialize_on` takes)
    before the statement ends, so the caller's next statement sees every transaction that held it. The count reads
    the lock's row, so the lock is always taken before the window's row: two turns of one user cannot deadlock.
    """
    used = _USED.cte("used")
    within = and_(
        bindparam("count_message", type_=Boolean),
        or_(bindparam("tokens_per_day") == 0, used.c.tokens_today < bindparam("tokens_per_day")),
        or_(bindparam("tokens_per_month") == 0, used.c.tokens_month < bindparam("tokens_per_month")),
        or_(bindparam("usd_per_month") == 0, used.c.usd_month < bindparam("usd_per_month")),
    )
    source: Select[str, datetime, int] = (
        select(bindparam("user_id", type_=String), bindparam("window_start", type_=DateTime), literal(1))
        .select_from(used)
        .where(within)
    )
    lock = select(advisory_lock(bindparam("lock_key", type_=String)).label("held")).cte("held")
    if locking:
        source = source.join(lock, true())
    counted = _count_upsert(
        postgresql.insert(RateWindow).from_select(["user_id", "window_start", "count"], source)
    ).cte("counted")
    admitted = select(
        used.c.tokens_today, used.c.tokens_month, used.c.usd_month, select(counted.c.count).scalar_subquery()
    )
    return admitted.join_from(used, lock, true()) if locking else admitted


_ADMIT = _admit_postgres(locking=False)
_ADMIT_LOCKING = _admit_postgres(locking=True)


def _within_quotas(limits: Limits, tokens_today: int, tokens_month: int, usd_month: float) -> bool:
    """No token or cost quota is used up (the same test as `_ADMIT`'s, for SQLite)."""
    return (
        (not limits.tokens_per_day or tokens_today < limits.tokens_per_day)
        and (not limits.tokens_per_month or tokens_month < limits.tokens_per_month)
        and (not limits.usd_per_month or usd_month < limits.usd_per_month)
    )


async def _admit(
    conn: AsyncConnection, params: dict[str, object], limits: Limits, count: bool
) -> tuple[tuple[int, int, float], int | None, bool]:
    """The usage the quotas count, the message's count in its window (None: not counted), and whether it locked."""
    if conn.dialect.name == "postgresql":
        row = (await conn.execute(_ADMIT if params["lock_key"] is None else _ADMIT_LOCKING, params)).one()
        return (int(row[0]), int(row[1]), float(row[2])), row[3], params["lock_key"] is not None
    # SQLite has no data-modifying CTE: the same read and write, two statements (its writers are serialised already)
    sums = (await conn.execute(_USED, params)).one()
    used = (int(sums[0]), int(sums[1]), float(sums[2]))
    counted = None
    if count and _within_quotas(limits, *used):
        counted = (await conn.execute(_COUNT_SQLITE, params)).scalar_one_or_none()
    return used, counted, False


@dataclass(slots=True)
class Gate:
    """A new message's admission, run by the turn store first in the transaction that begins the turn.

    It implements `backend.chat.store.rows.TurnAdmission`: a turn that does not begin counts nothing.
    """

    quotas: LimitsService
    user_id: str
    admission: Admission | None = None

    async def admit(self, conn: AsyncConnection, lock_key: str | None) -> bool:
        """Admit the message in the turn's transaction, taking `lock_key` in the same statement if there is one."""
        self.admission = await self.quotas.admit(self.user_id, message=True, conn=conn, lock_key=lock_key)
        return self.admission.locked

    @property
    def budget(self) -> Budget | None:
        """What the turn may spend (None: no quota applies, or the turn did not begin here)."""
        return None if self.admission is None else self.admission.budget


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
