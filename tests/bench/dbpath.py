"""The database path: list and read conversations for a user with 100,000 conversations and 1,000,000 messages.

`ensure_dataset` creates (once; later runs reuse it when the row counts match) a PostgreSQL database migrated with
the app's Alembic migrations and bulk-loaded with ``generate_series`` SQL: every conversation belongs to the local
user, has 10 messages (alternating user/assistant, realistic lengths) and a distinct ``updated_at``.

`explain_plans` captures the exact SQL the service layer issues (through a SQLAlchemy ``before_cursor_execute``
hook while calling `backend.conversations.service` directly) and runs it again under
``EXPLAIN (ANALYZE, BUFFERS)`` with the same parameters.

`measure_http` times the HTTP endpoints against a running server: ``GET /api/conversations`` (first page),
the same with a cursor deep in the list (after the 90,000th conversation) and ``GET /api/conversations/{id}``.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from typing import Any

import psycopg

from alembic import command
from backend.db import alembic_config

CONVERSATIONS = 100_000
MESSAGES_PER_CONVERSATION = 10
USER = "local"
DEEP_OFFSET = 90_000

SEED_SQL = [
    "SET synchronous_commit = off",
    # Drop the secondary indexes during the load and rebuild them after (much faster than maintaining them).
    "ALTER TABLE messages DROP CONSTRAINT IF EXISTS uq_messages_conversation_seq",
    "DROP INDEX IF EXISTS ix_conversations_user_updated",
    "DROP INDEX IF EXISTS ix_conversations_search",
    "DROP INDEX IF EXISTS ix_messages_search",
    f"""
    INSERT INTO conversations (title, id, user_id, created_at, updated_at, run_id, run_expires_at)
    SELECT 'Conversation number ' || g, md5('conversation-' || g)::uuid, '{USER}',
           timestamptz '2026-01-01 00:00:00+00' + g * interval '1 minute',
           timestamptz '2026-01-01 00:00:00+00' + g * interval '1 minute' + interval '30 seconds',
           NULL, NULL
    FROM generate_series(1, {CONVERSATIONS}) AS g
    """,
    f"""
    INSERT INTO messages (id, conversation_id, seq, role, content, tool_calls, status, error_code, usage, items,
                          created_at)
    SELECT gen_random_uuid(), md5('conversation-' || g)::uuid, s,
           CASE WHEN s % 2 = 1 THEN 'user' ELSE 'assistant' END,
           CASE WHEN s % 2 = 1 THEN 'Question ' || s || ' in conversation ' || g || ': could you add a task?'
                ELSE 'Sure. ' || repeat('Here is a fairly ordinary assistant answer with some detail. ', 6) END,
           CAST('[]' AS json), 'complete', NULL,
           CASE WHEN s % 2 = 0 THEN CAST('{{"input_tokens": 120, "output_tokens": 80, "total_tokens": 200}}' AS json)
           END,
           CASE WHEN s % 2 = 0 THEN CAST('[{{"role": "assistant", "content": "Sure."}}]' AS json) END,
           timestamptz '2026-01-01 00:00:00+00' + g * interval '1 minute' + s * interval '2 seconds'
    FROM generate_series(1, {CONVERSATIONS}) AS g, generate_series(1, {MESSAGES_PER_CONVERSATION}) AS s
    """,
    "ALTER TABLE messages ADD CONSTRAINT uq_messages_conversation_seq UNIQUE (conversation_id, seq)",
    "CREATE INDEX ix_conversations_user_updated ON conversations (user_id, updated_at, id)",
    # Migration 0008's full-text indexes (the generated search_vector columns filled themselves during the load).
    "CREATE INDEX ix_conversations_search ON conversations USING gin (search_vector)",
    "CREATE INDEX ix_messages_search ON messages USING gin (search_vector)",
]


def admin_url(base: str) -> str:
    """The maintenance database URL next to `base` (same server, database `postgres`)."""
    return base.rsplit("/", 1)[0] + "/postgres"


def recreate_database(base_url: str, name: str) -> None:
    """Drop (with FORCE) and create database `name` on the server of `base_url` (a postgresql:// URL)."""
    with psycopg.connect(admin_url(base_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def migrated_database(base_url: str, name: str) -> str:
    """A new database `name` next to `base_url`, migrated to head; its URL."""
    recreate_database(base_url, name)
    url = base_url.rsplit("/", 1)[0] + f"/{name}"
    command.upgrade(alembic_config(url=url), "head")
    return url


def _counts(url: str) -> tuple[int, int] | None:
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            convs = conn.execute("SELECT count(*) FROM conversations WHERE user_id = %s", (USER,)).fetchone()
            msgs = conn.execute("SELECT count(*) FROM messages").fetchone()
            return int(convs[0]), int(msgs[0])  # type: ignore[index]
    except psycopg.Error:
        return None


def ensure_dataset(base_url: str, name: str, log: Any = print) -> dict[str, Any]:
    """Create and load the dataset unless database `name` already holds exactly it. Returns timing facts."""
    url = base_url.rsplit("/", 1)[0] + f"/{name}"
    expected = (CONVERSATIONS, CONVERSATIONS * MESSAGES_PER_CONVERSATION)
    if _counts(url) == expected:
        log(f"  dataset in {name} already loaded ({expected[0]:,} conversations, {expected[1]:,} messages)")
        return {"reused": True, "seconds": 0.0}
    started = time.monotonic()
    log(f"  loading {expected[0]:,} conversations and {expected[1]:,} messages into {name} ...")
    recreate_database(base_url, name)
    from alembic import command
    from backend.db import alembic_config
    from backend.settings import normalize_database_url

    command.upgrade(alembic_config(url=normalize_database_url(url)), "head")
    with psycopg.connect(url, autocommit=True) as conn:
        for sql in SEED_SQL:
            conn.execute(sql)
        conn.execute("VACUUM ANALYZE conversations")
        conn.execute("VACUUM ANALYZE messages")
    seconds = time.monotonic() - started
    log(f"  loaded in {seconds:.1f} s")
    return {"reused": False, "seconds": seconds}


def deep_cursor(url: str) -> tuple[str, str]:
    """A list cursor positioned after the DEEP_OFFSET-th conversation, and a conversation id to read."""
    from backend.pagination import encode_time_cursor

    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT updated_at, id FROM conversations WHERE user_id = %s ORDER BY updated_at DESC, id DESC "
            "OFFSET %s LIMIT 1",
            (USER, DEEP_OFFSET),
        ).fetchone()
        mid = conn.execute(
            "SELECT id FROM conversations WHERE user_id = %s ORDER BY updated_at DESC OFFSET %s LIMIT 1",
            (USER, CONVERSATIONS // 2),
        ).fetchone()
    assert row is not None and mid is not None
    return encode_time_cursor(row[0], row[1]), str(mid[0])


def _get(url: str) -> tuple[float, int, int]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as resp:
        body = resp.read()
        status = resp.status
    return time.perf_counter() - started, status, len(body)


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def q(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

    return {
        "n": len(ordered),
        "p50_ms": q(0.5) * 1e3,
        "p90_ms": q(0.9) * 1e3,
        "p99_ms": q(0.99) * 1e3,
        "max_ms": ordered[-1] * 1e3,
    }


def measure_http(server: str, cursor: str, conversation_id: str, repeats: int) -> dict[str, Any]:
    """Sequential latencies of the three reads (after a few warm-up requests each)."""
    import urllib.parse

    targets = {
        "GET /api/conversations (first page)": f"{server}/api/conversations",
        f"GET /api/conversations?cursor=… (after {DEEP_OFFSET:,})": f"{server}/api/conversations?"
        + urllib.parse.urlencode({"cursor": cursor}),
        "GET /api/conversations/{id} (10 messages)": f"{server}/api/conversations/{conversation_id}",
    }
    out: dict[str, Any] = {}
    for label, url in targets.items():
        for _ in range(5):
            _get(url)
        samples, statuses, size = [], set(), 0
        for _ in range(repeats):
            seconds, status, size = _get(url)
            samples.append(seconds)
            statuses.add(status)
        out[label] = _stats(samples) | {"statuses": sorted(statuses), "bytes": size}
    return out


async def explain_calls(sa_url: str, calls: list[tuple[str, Any]], statement: int = -1) -> dict[str, str]:
    """EXPLAIN (ANALYZE, BUFFERS) of one statement each call sends (by default its last).

    `calls` are (label, async function of a session); `statement` indexes the statements the call sent.
    """
    from sqlalchemy import event
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
    from sqlmodel.ext.asyncio.session import AsyncSession

    engine = create_async_engine(sa_url)
    captured: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor_: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if not statement.lstrip().upper().startswith("EXPLAIN"):
            captured.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
    plans: dict[str, str] = {}
    try:
        for label, call in calls:
            async with sessions() as session:
                captured.clear()
                await call(session)
                sql, parameters = captured[statement]
                conn = await session.connection()
                result = await conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + sql, parameters)
                plan = "\n".join(row[0] for row in result.all())
                plans[label] = f"-- SQL\n{sql.strip()}\n-- params: {parameters!r}\n\n{plan}"
    finally:
        await engine.dispose()
    return plans


async def explain_plans(sa_url: str, cursor: str, conversation_id: str) -> dict[str, str]:
    """EXPLAIN (ANALYZE, BUFFERS) of the SQL the service layer runs for the three reads."""
    import uuid

    from backend.conversations import service
    from backend.conversations.routes import MESSAGES_DEFAULT_LIMIT

    calls = [
        ("list, first page", lambda s: service.list_conversations(s, USER)),
        ("list, deep page (cursor)", lambda s: service.list_conversations(s, USER, cursor=cursor)),
        ("read: conversation by id", lambda s: service.get_conversation(s, USER, uuid.UUID(conversation_id))),
        (
            "read: its messages",
            lambda s: service.list_messages(s, uuid.UUID(conversation_id), limit=MESSAGES_DEFAULT_LIMIT),
        ),
    ]
    plans = await explain_calls(sa_url, calls)
    return {label.removesuffix(""): plan for label, plan in plans.items()}


def run_explain(sa_url: str, cursor: str, conversation_id: str) -> dict[str, str]:
    """The plans of the service's SQL as it is, plus the deep page with the proposed row-value keyset (`rowcmp`)."""
    plans = asyncio.run(explain_plans(sa_url, cursor, conversation_id))
    import backend.conversations.service as conversations

    current = conversations.after_time_cursor
    from tests.bench import server

    server.apply(["rowcmp"])  # patches the service module in this process only
    try:
        proposed = asyncio.run(explain_plans(sa_url, cursor, conversation_id))
    finally:
        conversations.after_time_cursor = current
    plans["PROPOSED: list, deep page with a row-value keyset ((updated_at, id) < (:t, :id))"] = proposed[
        "list, deep page (cursor)"
    ]
    return plans
