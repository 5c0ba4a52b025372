"""Search on a shared database: one user's ranked search among 500 users (PostgreSQL), now and as it was.

Seeds database ``chatkit_search_tenants`` once (migrated to head; 100,000 conversations of 500 users, 10 messages
each, 1,000,000 messages; about a minute), then times the ranked SQL of `backend.conversations.search` for one user
(200 conversations) with ``EXPLAIN ANALYZE`` (median of 7): a word in every assistant message (``ordinary``) and two
words in every user message (``tomorrow item``). The *before* rows run the same SQL with the owner filter taken out
of the message hits (the query until 7 December 2026: every user's matches scored, then filtered), for comparison.

    .venv/bin/python -m tests.bench.search_tenants [--pg postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import statistics
import time

import psycopg

from alembic import command
from backend.conversations.search import _ranked_query  # pyright: ignore[reportPrivateUsage]
from backend.db import alembic_config
from tests.bench.dbpath import admin_url

NAME = "chatkit_search_tenants"
USERS, CONVERSATIONS, MESSAGES = 500, 100_000, 10
USER = "user-7"
OWNER_FILTER = (
    " JOIN conversations AS c ON c.id = m.conversation_id\n"
    "    WHERE m.search_vector @@ query.q AND c.user_id = :user_id AND c.archived = :archived"
)


def seed(url: str) -> None:
    """Create and fill the database unless it is there already."""
    with psycopg.connect(admin_url(url), autocommit=True) as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (NAME,)).fetchone():
            with psycopg.connect(url) as conn:
                if conn.execute("SELECT EXISTS (SELECT 1 FROM messages)").fetchone() == (True,):
                    return
        admin.execute(f'DROP DATABASE IF EXISTS "{NAME}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{NAME}"')
    command.upgrade(alembic_config(url=url.replace("postgresql://", "postgresql+psycopg://", 1)), "head")
    started = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO conversations (id, user_id, title, created_at, updated_at, archived, title_source,"
            " run_cancel_requested) SELECT md5('c' || g)::uuid, 'user-' || (g %% %(users)s), 'Conversation ' || g,"
            " now(), now() - (g || ' seconds')::interval, false, 'message', false"
            " FROM generate_series(1, %(conversations)s) AS g",
            {"users": USERS, "conversations": CONVERSATIONS},
        )
        conn.execute(
            "INSERT INTO messages (id, conversation_id, seq, role, content, tool_calls, status, created_at, parts)"
            " SELECT md5('m' || g || '-' || s)::uuid, md5('c' || g)::uuid, s,"
            " CASE WHEN s %% 2 = 1 THEN 'user' ELSE 'assistant' END,"
            " CASE WHEN s %% 2 = 1 THEN 'please remind me about item ' || g || ' tomorrow'"
            " ELSE 'Sure, here is an ordinary reply about item ' || g || ' with some more words' END,"
            " '[]', 'complete', now(), '[]'"
            " FROM generate_series(1, %(conversations)s) AS g, generate_series(1, %(messages)s) AS s",
            {"conversations": CONVERSATIONS, "messages": MESSAGES},
        )
        conn.execute("ANALYZE")
    print(f"seeded {NAME} in {time.monotonic() - started:.0f} s")  # noqa: T201


def main() -> None:
    """Seed once, then print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    url = parser.parse_args().pg.rsplit("/", 1)[0] + f"/{NAME}"
    seed(url)
    now = str(_ranked_query("postgresql", after=False))
    before = now.replace(OWNER_FILTER, "\n    WHERE m.search_vector @@ query.q")
    assert before != now, "the ranked SQL changed: update OWNER_FILTER"
    print("| query | ranked SQL | median ms | rows |")  # noqa: T201
    print("|---|---|---|---|")  # noqa: T201
    with psycopg.connect(url, autocommit=True) as conn:
        for label, sql in (("before (every user's matches scored)", before), ("now (the caller's only)", now)):
            for name in ("terms", "user_id", "archived", "limit"):
                sql = sql.replace(f":{name}", f"%({name})s")
            for words in ("ordinary", "tomorrow item"):
                params = {"terms": words, "user_id": USER, "archived": False, "limit": 21}
                times = []
                for _ in range(7):
                    row = conn.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", params).fetchone()
                    assert row is not None
                    times.append(float(row[0][0]["Execution Time"]))
                found = len(conn.execute(sql, params).fetchall())
                print(f"| `{words}` | {label} | {statistics.median(times):,.1f} | {found} |")  # noqa: T201


if __name__ == "__main__":
    main()
