"""Writing the ledger: a turn's `usage_records` rows and, in the same transaction, the users' daily totals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime

from sqlalchemy import CTE, column, exists, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col

from backend.db import json_recordset, recordset_json, table_of
from backend.storable import storable_json
from backend.usage.models import UsageDaily, UsageRecord

_LEDGER_INSERT = insert(UsageRecord)


def _daily_upsert(insert: postgresql.Insert | sqlite.Insert) -> postgresql.Insert | sqlite.Insert:
    """Add a day's tokens and cost to the user's row of that day (created if missing)."""
    return insert.on_conflict_do_update(
        index_elements=["user_id", "day"],
        set_={
            "total_tokens": col(UsageDaily.total_tokens) + insert.excluded.total_tokens,
            "cost_usd": col(UsageDaily.cost_usd) + insert.excluded.cost_usd,
        },
    )


_DAILY_UPSERT = {  # built once per dialect, not per finished turn
    "postgresql": _daily_upsert(postgresql.insert(UsageDaily)),
    "sqlite": _daily_upsert(sqlite.insert(UsageDaily)),
}


def utc_day(moment: datetime) -> date:
    """The UTC day of a moment (a naive one is taken as UTC, as the database stores it)."""
    return (moment.astimezone(UTC) if moment.tzinfo is not None else moment).date()


async def write_ledger(conn: AsyncConnection, rows: Sequence[Mapping[str, object]]) -> None:
    """Insert ledger rows (`backend.usage.ledger.ledger_rows`) and add them to `usage_daily`, in `conn`'s transaction.

    The daily rows are raised in (user, day) order, so concurrent writers lock them in the same order.
    """
    if not rows:
        return
    await conn.execute(_LEDGER_INSERT, list(rows))
    upsert = _DAILY_UPSERT["postgresql" if conn.dialect.name == "postgresql" else "sqlite"]
    for total in daily_totals(rows):
        await conn.execute(upsert, total)


def daily_totals(rows: Sequence[Mapping[str, object]]) -> list[dict[str, object]]:
    """What ledger rows add to `usage_daily`: one row per user and UTC day, in (user, day) order."""
    totals: dict[tuple[str, date], tuple[int, float]] = {}
    for row in rows:
        created, tokens, cost = row["created_at"], row["total_tokens"], row["cost_usd"]
        assert isinstance(created, datetime) and isinstance(tokens, int) and isinstance(cost, float | int)
        key = (str(row["user_id"]), utc_day(created))
        before = totals.get(key, (0, 0.0))
        totals[key] = (before[0] + tokens, before[1] + float(cost))
    return [
        {"user_id": user_id, "day": day, "total_tokens": tokens, "cost_usd": cost}
        for (user_id, day), (tokens, cost) in sorted(totals.items())
    ]


def ledger_ctes(after: CTE) -> list[CTE]:
    """PostgreSQL: the ledger write as parts of a larger statement, done only if `after` returns a row.

    The ledger rows come as the JSON parameter `ledger`, the daily totals as `daily` (`ledger_params`); the same rows
    and upsert as `write_ledger`, daily rows in (user, day) order.
    """
    guard = exists(after.select())
    records = table_of(UsageRecord)
    source = json_recordset("ledger", "r", [column(c.name, c.type) for c in records.columns])
    ledger = insert(records).from_select(list(records.columns.keys()), select(*source.c).where(guard))
    table = table_of(UsageDaily)
    days = json_recordset("daily", "d", [column(c.name, c.type) for c in table.columns])
    daily = _daily_upsert(
        postgresql.insert(table).from_select(
            list(table.columns.keys()), select(*days.c).where(guard).order_by(days.c.user_id, days.c.day)
        )
    )
    return [ledger.cte("ledger"), daily.cte("daily")]


def ledger_params(rows: Sequence[Mapping[str, object]]) -> dict[str, str]:
    """The parameters of `ledger_ctes` for these ledger rows (none: nothing is written)."""
    clean = [{key: storable_json(value) for key, value in row.items()} for row in rows]
    return {"ledger": recordset_json(clean), "daily": recordset_json(daily_totals(clean))}
