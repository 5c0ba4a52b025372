"""What the quota and rate-limit checks cost per admitted message, on PostgreSQL (issue 23's "under 2% of CPU").

Runs `LimitsService.admit` (every limit on, none refusing) against a user whose ledger already holds N rows this month,
and reports, per admission, this process's CPU and the wall time (which includes PostgreSQL's work), next to the same
admission with no limit set (the check is then skipped). Compare the CPU with the bench's CPU per reply (`run.py`).

    .venv/bin/python -m tests.bench.quota_cost [--pg URL] [--rows 0,10000,100000] [--admits 300]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime

import psycopg
from sqlalchemy import insert

from alembic import command
from backend.db import alembic_config, create_database
from backend.settings import Settings
from backend.usage.limits import LimitsService
from backend.usage.models import UsageRecord

DB = "chatkit_quota_bench"
ON = {"tokens_per_day": 10**12, "tokens_per_month": 10**12, "usd_per_month": 10**9, "messages_per_minute": 10**9}


def fresh(admin: str) -> str:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB}"')
    url = admin.rsplit("/", 1)[0] + f"/{DB}"
    command.upgrade(alembic_config(url=url), "head")
    return url


async def measure(url: str, rows: int, admits: int, limits: dict[str, float]) -> tuple[float, float]:
    settings = Settings(database_url=url, **limits)  # type: ignore[arg-type]
    database = create_database(settings)
    try:
        async with database.engine.begin() as conn:
            await conn.execute(UsageRecord.__table__.delete())  # type: ignore[attr-defined]
            now = datetime.now(UTC)
            row = {"user_id": "u", "model": "m", "total_tokens": 10, "cost_usd": 0.0001, "created_at": now}
            batch = [{"id": uuid.uuid4(), **row} for _ in range(rows)]
            for start in range(0, rows, 10_000):
                await conn.execute(insert(UsageRecord), batch[start : start + 10_000])
        service = LimitsService(database, settings)
        for _ in range(20):  # warm the pool and the plan cache
            await service.admit("u", message=True)
        cpu, wall = [], []
        for _ in range(admits):
            c0, w0 = time.thread_time(), time.perf_counter()
            await service.admit("u", message=True)
            cpu.append(time.thread_time() - c0)
            wall.append(time.perf_counter() - w0)
        return statistics.median(cpu) * 1000, statistics.median(wall) * 1000
    finally:
        await database.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--rows", default="0,10000,100000")
    parser.add_argument("--admits", type=int, default=300)
    args = parser.parse_args()
    url = fresh(args.pg)
    out = sys.stdout
    out.write("| ledger rows this month | limits | CPU ms per admission (median) | wall ms (median) |\n")
    out.write("|---|---|---|---|\n")
    for rows in (int(n) for n in args.rows.split(",")):
        for label, limits in (("off", {}), ("all on", ON)):
            cpu, wall = asyncio.run(measure(url, rows, args.admits, limits))
            out.write(f"| {rows:,} | {label} | {cpu:.3f} | {wall:.3f} |\n")
            out.flush()


if __name__ == "__main__":
    main()
