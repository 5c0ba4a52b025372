"""Usage reports from the ledger: totals per day, model, conversation or user over a time range."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Mapped
from sqlmodel import Field, SQLModel, col

from backend.db import Database
from backend.usage.models import UsageRecord

GroupBy = Literal["day", "model", "conversation", "user"]


class UsageTotals(SQLModel):
    """Sums over a set of model calls."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0
    unpriced_calls: int = Field(default=0, description="Calls of models LiteLLM's cost map does not price (cost 0).")


class UsageGroup(UsageTotals):
    """The sums of one group: a UTC day (`YYYY-MM-DD`), a model string, a conversation id or a user id."""

    key: str | None


class UsageReport(SQLModel):
    """`GET /api/usage`: the caller's model usage from `start` to `end` (the query's `from` and `to`, `end` out)."""

    start: datetime
    end: datetime
    group_by: GroupBy
    data: list[UsageGroup]
    total: UsageTotals


def _key(group_by: GroupBy, dialect: str) -> ColumnElement[str] | Mapped[str] | Mapped[uuid.UUID | None]:
    if group_by == "model":
        return col(UsageRecord.model)
    if group_by == "user":
        return col(UsageRecord.user_id)
    if group_by == "conversation":
        return col(UsageRecord.conversation_id)  # a UUID; its text is the key
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", col(UsageRecord.created_at)), "YYYY-MM-DD")
    return func.substr(col(UsageRecord.created_at), 1, 10)  # SQLite stores UTC as `YYYY-MM-DD HH:MM:SS...`


async def usage_report(
    database: Database, user_id: str | None, start: datetime, end: datetime, group_by: GroupBy
) -> UsageReport:
    """Sum the ledger's rows in `[start, end)` by `group_by`, for one user (or every user when None)."""
    key = _key(group_by, database.engine.dialect.name).label("key")
    sums = (
        func.count(),
        func.coalesce(func.sum(col(UsageRecord.input_tokens)), 0),
        func.coalesce(func.sum(col(UsageRecord.output_tokens)), 0),
        func.coalesce(func.sum(col(UsageRecord.total_tokens)), 0),
        func.coalesce(func.sum(col(UsageRecord.cached_tokens)), 0),
        func.coalesce(func.sum(col(UsageRecord.reasoning_tokens)), 0),
        func.coalesce(func.sum(col(UsageRecord.cost_usd)), 0.0),
        func.count().filter(col(UsageRecord.priced).is_(False)),
    )
    where = [col(UsageRecord.created_at) >= start, col(UsageRecord.created_at) < end]
    if user_id is not None:
        where.append(col(UsageRecord.user_id) == user_id)
    statement = select(key, *sums).where(*where).group_by(key).order_by(key)
    async with database.engine.connect() as conn:
        rows = (await conn.execute(statement)).all()
    data = [
        UsageGroup(
            key=None if row[0] is None else str(row[0]),
            calls=row[1],
            input_tokens=row[2],
            output_tokens=row[3],
            total_tokens=row[4],
            cached_tokens=row[5],
            reasoning_tokens=row[6],
            cost_usd=round(float(row[7]), 9),
            unpriced_calls=row[8],
        )
        for row in rows
    ]
    total = UsageTotals(
        calls=sum(g.calls for g in data),
        input_tokens=sum(g.input_tokens for g in data),
        output_tokens=sum(g.output_tokens for g in data),
        total_tokens=sum(g.total_tokens for g in data),
        cached_tokens=sum(g.cached_tokens for g in data),
        reasoning_tokens=sum(g.reasoning_tokens for g in data),
        cost_usd=round(sum(g.cost_usd for g in data), 9),
        unpriced_calls=sum(g.unpriced_calls for g in data),
    )
    return UsageReport(start=start, end=end, group_by=group_by, data=data, total=total)
