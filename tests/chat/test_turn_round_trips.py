"""The database budget of a chat turn: how many transactions, statements and pool checkouts one turn costs.

Every statement is a round trip to the database and CPU on the hot path, so the budget is pinned here: a change that
adds one has to say so by changing these numbers. Counted on the app's own engine, through SQLAlchemy's events,
while real uvicorn serves a turn on the fake Gemini (background writers slowed down so that only the turn counts).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from litestar import Litestar
from sqlalchemy import event

from backend.app import create_app
from backend.settings import Settings
from tests.conftest import serve
from tests.fakes.gemini import FakeGemini, function_call_turn, handoff_turn, text_turn
from tests.sse import chat

pytestmark = pytest.mark.timeout(60)


@dataclass
class Counts:
    """What one turn cost the database."""

    app: Litestar
    limits: bool = False  # every quota and rate limit is on
    checkouts: int = 0
    transactions: int = 0
    statements: list[str] = field(default_factory=list)

    def reset(self) -> None:
        self.checkouts, self.transactions, self.statements[:] = 0, 0, []

    def summary(self) -> dict[str, int]:
        return {"checkouts": self.checkouts, "transactions": self.transactions, "statements": len(self.statements)}

    async def settle(self) -> None:
        """Wait until every turn has finished (its outcome is written after `done` is sent) and the database has
        been quiet for a moment (the start-up's own sweeps are over)."""
        async with asyncio.timeout(20):
            while self.app.state.chat_service.runs:
                await asyncio.sleep(0.02)
            seen = -1
            while seen != len(self.statements):
                seen = len(self.statements)
                await asyncio.sleep(0.3)


LIMITS_ON = {"tokens_per_day": 10**9, "tokens_per_month": 10**9, "usd_per_month": 10**6, "messages_per_minute": 10**6}


@pytest.fixture(params=["default", "limits"])
async def counted(
    gemini_settings: Callable[..., Settings], request: pytest.FixtureRequest
) -> AsyncIterator[tuple[httpx.AsyncClient, Counts]]:
    """A live app whose engine counts its work, once its start-up work is over (with the default limits, or with
    every quota and rate limit on as well: their checks cost the same budget)."""
    # A heartbeat of a minute needs a takeover delay longer than two of them, or the turns renew their lease
    # themselves (see backend/chat/lease.py).
    limits = LIMITS_ON if request.param == "limits" else {}
    app = create_app(gemini_settings(heartbeat_seconds=60, stale_after_seconds=600, event_flush_seconds=5, **limits))
    counts = Counts(app, limits=bool(limits))
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
        engine = app.state.database.engine.sync_engine

        def on_checkout(*_args: Any) -> None:
            counts.checkouts += 1

        def on_begin(conn: Any) -> None:
            # PostgreSQL sends no BEGIN in autocommit; SQLite's BEGIN is a statement of ours, counted below too.
            if not getattr(conn.connection.driver_connection, "autocommit", False):
                counts.transactions += 1

        def on_statement(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            counts.statements.append(" ".join(statement.split())[:80])

        event.listen(engine.pool, "checkout", on_checkout)
        event.listen(engine, "begin", on_begin)
        event.listen(engine, "before_cursor_execute", on_statement)
        await counts.settle()
        yield client, counts


async def run_turn(client: httpx.AsyncClient, counts: Counts, message: str) -> dict[str, int]:
    """One turn, to the end of its stream and its save; what it cost."""
    counts.reset()
    stream = await chat(client, {"message": message})
    assert stream.types[-1] == "done", stream.types
    await counts.settle()
    return counts.summary()


async def test_a_new_conversations_tool_turn_stays_in_budget(counted, fake: FakeGemini, database_url):
    client, counts = counted
    fake.script(handoff_turn(), function_call_turn("list_tasks", {}), text_turn("You have no tasks."))
    cost = await run_turn(client, counts, "what are my tasks?")
    if database_url.startswith("postgresql"):
        # begin (1 transaction, 2 statements): the per-user advisory lock for MAX_TURNS_PER_USER (quotas and the
        # message rate read the usage and count the message in that same statement), then one statement that counts
        # the user's running turns and adds the conversation and both messages. The tool's read (autocommit: no
        # transaction). finish (1 statement in autocommit): the reply, the usage ledger's rows of its three model
        # calls and the user's daily total, the last events with their notification, the lock's release.
        assert cost == {"checkouts": 3, "transactions": 1, "statements": 4}, counts.statements
    else:
        # SQLite has no notification; its BEGINs are statements, and the read is a transaction too (a plain BEGIN,
        # not BEGIN IMMEDIATE: it does not queue for the writer slot).
        # MAX_TURNS_PER_USER adds 1 to begin: the count of the user's running turns (BEGIN IMMEDIATE serialises).
        # Quotas add 1 (the usage) and the message rate 1 (its count), in the same transaction.
        extra = 2 if counts.limits else 0
        assert cost == {"checkouts": 3, "transactions": 3, "statements": 11 + 1 + extra}, counts.statements
        assert counts.statements.count("BEGIN") == 1


async def test_a_follow_up_turn_that_adds_a_task_stays_in_budget(counted, fake: FakeGemini, database_url):
    client, counts = counted
    fake.script(text_turn("Hello."))
    first = await chat(client, {"message": "hello"})
    conversation_id = first.of("start")[0]["conversation_id"]
    await counts.settle()
    fake.script(handoff_turn(), function_call_turn("add_task", {"title": "buy milk"}), text_turn("Added."))
    counts.reset()
    stream = await chat(client, {"message": "add buy milk", "conversation_id": conversation_id})
    assert stream.types[-1] == "done", stream.types
    await counts.settle()
    cost = counts.summary()
    # begin (1: lock the conversation, read its history, add both messages), the tool (1: INSERT ... RETURNING,
    # no read-back), finish (1, with the ledger's rows in one INSERT and the daily total's upsert; on PostgreSQL one
    # statement in autocommit). No quota is configured: no usage read.
    if database_url.startswith("postgresql"):
        assert cost == {"checkouts": 3, "transactions": 2, "statements": 6 + 2}, counts.statements  # + the turn limit
    else:
        extra = 2 if counts.limits else 0  # the usage and the message's count
        assert cost == {"checkouts": 3, "transactions": 3, "statements": 13 + 1 + extra}, counts.statements
    assert [s for s in counts.statements if "tasks" in s] == [
        next(s for s in counts.statements if "INSERT INTO tasks" in s)
    ]
