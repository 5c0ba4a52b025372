"""What the quota and rate-limit checks add to a turn, on PostgreSQL (issue 23's "under 2% of CPU per reply").

A turn's checks run in the transaction that begins it. This runs that transaction's check part three ways, against
a user with a month of daily totals, and reports this process's CPU and the wall time (which includes PostgreSQL's
work) per turn, medians of `--admits` turns in each of three interleaved rounds:
- *no limit*: no check (a transaction with one statement, the base);
- *running turns only* (the default `MAX_TURNS_PER_USER`): the per-user lock, then the count of running turns;
- *every limit on* (tokens per day and month, USD per month, messages per minute, running turns; none refusing): the
  admission (usage read, message counted, lock taken: one statement), then the count.
Compare the differences with the bench's CPU per reply (`run.py`).

    .venv/bin/python -m tests.bench.quota_cost [--pg URL] [--admits 300]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.chat.store.lock import RunLock
from backend.chat.store.rows import TurnRequest
from backend.chat.store.turns import TurnRows, running_turns_key
from backend.db import Database, create_database
from backend.settings import Settings
from backend.usage.limits import LimitsService
from backend.usage.models import UsageDaily
from tests.bench.dbpath import migrated_database

DB = "chatkit_quota_bench"
ON = {
    "tokens_per_day": 10**12,
    "tokens_per_month": 10**12,
    "usd_per_month": 10**9,
    "messages_per_minute": 10**9,
    "max_turns_per_user": 10**6,
}


def fresh(admin: str) -> str:
    return migrated_database(admin, DB)


Check = Callable[[AsyncSession, AsyncConnection], Awaitable[None]]


async def measure(url: str, admits: int) -> dict[str, tuple[float, float]]:
    settings = Settings(database_url=url, **ON)  # type: ignore[arg-type]
    database = create_database(settings)
    quotas = LimitsService(database, settings)
    rows = TurnRows.__new__(TurnRows)  # only its lock's SQL is used by the check
    rows.lock = RunLock(uuid.uuid4(), stale_after=timedelta(seconds=30), ttl=timedelta(minutes=10))
    request = TurnRequest(user_id="u", message="", conversation_id=None, max_running=10**6)

    async def nothing(session: AsyncSession, conn: AsyncConnection) -> None:
        return None

    async def running(session: AsyncSession, conn: AsyncConnection) -> None:
        await rows._check_running_turns(session, request, datetime.now(UTC), serialized=False)

    async def everything(session: AsyncSession, conn: AsyncConnection) -> None:
        locked = await quotas.gate("u").admit(conn, running_turns_key("u"))
        await rows._check_running_turns(session, request, datetime.now(UTC), serialized=locked)

    checks: dict[str, Check] = {"no limit": nothing, "running turns only": running, "every limit on": everything}
    try:
        today = datetime.now(UTC).date()
        async with database.engine.begin() as conn:
            days = [today - timedelta(days=n) for n in range(today.day)]
            await conn.execute(
                insert(UsageDaily), [{"user_id": "u", "day": d, "total_tokens": 10, "cost_usd": 0.001} for d in days]
            )
        rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in checks}
        for _ in range(3):
            for name, check in checks.items():
                rounds[name].append(await _turns(database, check, admits))
        return {
            name: (statistics.median(c for c, _ in got), statistics.median(w for _, w in got))
            for name, got in rounds.items()
        }
    finally:
        await database.dispose()


async def _turns(database: Database, check: Check, admits: int) -> tuple[float, float]:
    cpu, wall = [], []
    for n in range(admits + 20):  # the first 20 warm the pool and the plan cache
        c0, w0 = time.thread_time(), time.perf_counter()
        async with database.sessions() as session:
            await check(session, await session.connection())
            await session.exec(select(1))
            await session.commit()
        if n >= 20:
            cpu.append(time.thread_time() - c0)
            wall.append(time.perf_counter() - w0)
    return statistics.median(cpu) * 1000, statistics.median(wall) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--admits", type=int, default=300)
    args = parser.parse_args()
    results = asyncio.run(measure(fresh(args.pg), args.admits))
    base_cpu, base_wall = results["no limit"]
    out = sys.stdout
    out.write("| checks in the turn's transaction | CPU ms per turn (median) | added CPU ms | added wall ms |\n")
    out.write("|---|---|---|---|\n")
    for name, (cpu, wall) in results.items():
        out.write(f"| {name} | {cpu:.3f} | {cpu - base_cpu:+.3f} | {wall - base_wall:+.3f} |\n")


if __name__ == "__main__":
    main()
