"""The usage ledger, quotas and rate limits: rows per model call, reports, 429s, a mid-run quota end, and a
quota shared by two processes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import litellm
import pytest
from sqlalchemy import insert, select, text
from sqlmodel import col

from backend.app import create_app
from backend.db import Database, create_database
from backend.errors import InvalidInputError
from backend.models import Message
from backend.settings import PROJECT_ROOT, Settings
from backend.team.agents import TASK_ASSISTANT, TRIAGE
from backend.usage import cli
from backend.usage.ledger import price
from backend.usage.limits import LimitExceededError, LimitsService
from backend.usage.models import RateWindow, UsageDaily, UsageRecord, UserLimits
from tests.conftest import error_of, live, serve
from tests.fakes.gemini import FakeGemini, function_call_turn, handoff_turn, text_turn
from tests.sse import chat

pytestmark = pytest.mark.timeout(90)
MODEL = "gemini/gemini-2.5-flash"


async def ledger(db: Database) -> list[UsageRecord]:
    async with db.sessions() as session:
        return list((await session.exec(select(UsageRecord).order_by(col(UsageRecord.created_at)))).scalars())


def tool_turn_with_a_handoff(fake: FakeGemini) -> None:
    fake.script(
        handoff_turn(usage=(10, 2)),
        function_call_turn("list_tasks", {}, usage=(20, 7)),
        text_turn("You have no tasks.", usage=(30, 5, 4)),
    )


async def test_a_tool_turn_with_a_handoff_writes_one_row_per_model_call(gemini_settings, fake, db):
    tool_turn_with_a_handoff(fake)
    async with live(gemini_settings()) as client:
        stream = await chat(client, {"message": "what are my tasks?"})
    assert stream.types[-1] == "done"
    start = stream.of("start")[0]
    rows = await ledger(db)
    assert [(r.agent, r.model, r.input_tokens, r.output_tokens, r.total_tokens) for r in rows] == [
        (TRIAGE, MODEL, 10, 2, 12),
        (TASK_ASSISTANT, MODEL, 20, 7, 27),
        (TASK_ASSISTANT, MODEL, 30, 9, 39),  # output = candidates + thoughts
    ]
    assert [r.reasoning_tokens for r in rows] == [0, 0, 4]
    assert {(str(r.conversation_id), str(r.message_id), r.user_id, r.outcome) for r in rows} == {
        (start["conversation_id"], start["message_id"], "local", "ok")
    }
    assert all(r.priced for r in rows)
    for row in rows:
        expected = sum(
            litellm.cost_per_token(model=MODEL, prompt_tokens=row.input_tokens, completion_tokens=row.output_tokens)
        )
        assert row.cost_usd == pytest.approx(expected) and row.cost_usd > 0
    done = stream.of("done")[0]["usage"]
    assert sum(r.total_tokens for r in rows) == done["total_tokens"] == 78
    async with db.sessions() as session:
        [daily] = (await session.exec(select(UsageDaily))).scalars().all()
    assert (daily.user_id, daily.day, daily.total_tokens) == ("local", datetime.now(UTC).date(), 78)
    assert daily.cost_usd == pytest.approx(sum(r.cost_usd for r in rows))


async def test_the_offline_model_is_recorded_unpriced_and_the_report_sums_it(client, db):
    for _ in range(2):
        stream = await chat(client, {"message": "list my tasks"})
        assert stream.types[-1] == "done"
    rows = await ledger(db)
    assert len(rows) == 6  # three calls per turn: the handoff, the tool call, the reply
    assert {(r.model, r.priced, r.cost_usd) for r in rows} == {("offline-demo", False, 0.0)}
    by_model = (await client.get("/api/usage", params={"group_by": "model"})).json()
    assert by_model["group_by"] == "model"
    assert set(by_model) == {"start", "end", "group_by", "data", "total"}
    [group] = by_model["data"]
    assert group["key"] == "offline-demo"
    assert group["calls"] == 6 == group["unpriced_calls"]
    assert group["total_tokens"] == sum(r.total_tokens for r in rows) == by_model["total"]["total_tokens"]
    by_day = (await client.get("/api/usage")).json()
    assert [g["key"] for g in by_day["data"]] == [datetime.now(UTC).date().isoformat()]
    by_conversation = (await client.get("/api/usage", params={"group_by": "conversation"})).json()
    assert len(by_conversation["data"]) == 2
    assert {g["key"] for g in by_conversation["data"]} == {str(r.conversation_id) for r in rows}
    past = (await client.get("/api/usage", params={"from": "2020-01-01", "to": "2020-02-01"})).json()
    assert past["data"] == [] and past["total"]["calls"] == 0
    bad = await client.get("/api/usage", params={"from": "yesterday"})
    assert bad.status_code == 422 and error_of(bad)["error"]["code"] == "validation_error"
    assert (await client.get("/api/usage", params={"group_by": "user"})).status_code in (400, 422)


def assert_429(response: Any, code: str, limit_name: str, limit: float, usage: float) -> dict[str, Any]:
    assert response.status_code == 429, response.text
    body = error_of(response)["error"]
    assert (body["code"], body["limit_name"], body["limit"], body["usage"]) == (code, limit_name, limit, usage)
    reset_at = datetime.fromisoformat(body["reset_at"])
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= (reset_at - datetime.now(UTC)).total_seconds() + 2
    return body


async def test_a_used_up_daily_token_quota_refuses_before_any_model_call(gemini_settings, fake, db):
    fake.script(text_turn("Hello there.", usage=(10, 5)))
    async with live(gemini_settings(tokens_per_day=15)) as client:
        first = await chat(client, {"message": "hi"})
        assert first.types[-2:] == ["text", "done"]  # the call that reached the quota was the turn's last
        requests_before = len(fake.requests)
        refused = await client.post("/chatkit", json={"message": "again"})
        body = assert_429(refused, "quota_exceeded", "tokens_per_day", 15, 15)
    assert datetime.fromisoformat(body["reset_at"]) == datetime.now(UTC).replace(
        hour=0, minute=0, second=0, microsecond=0
    ) + timedelta(days=1)
    assert len(fake.requests) == requests_before
    async with db.sessions() as session:
        assert len((await session.exec(select(Message))).all()) == 2  # the refused message was not stored


async def test_a_turn_crossing_its_quota_ends_after_that_call_with_its_reply_stored(gemini_settings, fake, db):
    tool_turn_with_a_handoff(fake)  # 12 tokens, then 27: the second call crosses 30
    async with live(gemini_settings(tokens_per_month=30)) as client:
        stream = await chat(client, {"message": "what are my tasks?"})
    assert stream.types[-2:] == ["error", "done"]
    assert stream.of("error")[0]["code"] == "quota_exceeded"
    assert len(fake.requests) == 2  # no third call
    rows = await ledger(db)
    assert [r.total_tokens for r in rows] == [12, 27]
    async with db.sessions() as session:
        reply = (await session.exec(select(Message).where(col(Message.role) == "assistant"))).scalars().one()
    assert (reply.status, reply.error_code) == ("error", "quota_exceeded")
    assert reply.agent == TASK_ASSISTANT  # the handoff before the quota's end is kept


async def test_a_conversation_deleted_during_its_turn_keeps_the_turns_spending(gemini_settings, fake, db):
    """The reply is dropped with its conversation; its model call was made and paid for, so the ledger keeps it."""
    fake.script(text_turn([f"w{i} " for i in range(60)], delay=0.05, usage=(11, 60)))
    async with (
        live(gemini_settings()) as client,
        client.stream("POST", "/chatkit", json={"message": "a long story"}) as response,
    ):
        assert response.status_code == 200
        conversation_id = None
        lines = response.aiter_lines()
        async for line in lines:
            if line.startswith("data:") and '"conversation_id"' in line and conversation_id is None:
                conversation_id = json.loads(line[5:])["conversation_id"]
            if line.startswith("data:") and '"type":"text"' in line.replace(" ", ""):
                break
        assert conversation_id is not None
        deleted = await client.delete(f"/api/conversations/{conversation_id}")
        assert deleted.status_code == 204
        async for _ in lines:  # the stream still ends
            pass

    async def rows() -> list[UsageRecord]:
        return [r for r in await ledger(db) if str(r.conversation_id) == conversation_id]

    for _ in range(100):
        if await rows():
            break
        await asyncio.sleep(0.1)
    kept = await rows()
    assert len(kept) == 1, "the deleted conversation's model call is missing from the ledger"
    assert kept[0].user_id == "local"
    async with db.sessions() as session:
        [daily] = (await session.exec(select(UsageDaily))).scalars().all()
    assert (daily.total_tokens, daily.cost_usd) == (kept[0].total_tokens, kept[0].cost_usd), "counted once, in step"


async def fresh_minute() -> None:
    """Wait for a new minute if this one is nearly over (the per-minute window must not turn during a test)."""
    second = datetime.now(UTC).second
    if second > 40:
        await asyncio.sleep(61 - second)


async def test_messages_per_minute_count_once_per_message(settings_with: Callable[..., Settings]):
    await fresh_minute()
    async with live(settings_with(messages_per_minute=2)) as client:
        key = str(uuid.uuid4())
        first = await chat(client, {"message": "hi", "client_message_id": key})
        again = await chat(client, {"message": "hi", "client_message_id": key})  # an idempotent retry
        assert first.types[-1] == again.types[-1] == "done"
        for _ in range(3):  # a turn that does not begin counts nothing (it is counted in the turn's transaction)
            missing = await client.post("/chatkit", json={"message": "hi", "conversation_id": str(uuid.uuid4())})
            assert missing.status_code == 404
        second = await chat(client, {"message": "hello"})
        assert second.types[-1] == "done"
        refused = await client.post("/chatkit", json={"message": "one more"})
        assert_429(refused, "rate_limited", "messages_per_minute", 2, 2)
        assert int(refused.headers["retry-after"]) <= 60


@pytest.mark.parametrize("quotas", [{}, {"tokens_per_day": 10**9, "messages_per_minute": 10**6}])
async def test_running_turns_per_user_are_capped(settings_with: Callable[..., Settings], quotas: dict[str, int]):
    # With quotas, the admission's statement takes the per-user lock the count needs.
    async with live(settings_with(max_turns_per_user=1, **quotas)) as client:
        async with client.stream("POST", "/chatkit", json={"message": "list my tasks"}) as running:
            assert running.status_code == 200
            refused = await client.post("/chatkit", json={"message": "hello"})
            assert_429(refused, "rate_limited", "max_turns_per_user", 1, 1)
            async for _ in running.aiter_lines():
                pass
        assert (await chat(client, {"message": "hello"})).types[-1] == "done"


async def test_a_users_override_replaces_the_setting(settings_with: Callable[..., Settings], db):
    await fresh_minute()
    app = create_app(settings_with(messages_per_minute=1))
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
        async with db.sessions() as session:
            session.add(UserLimits(user_id="local", messages_per_minute=0))  # 0 lifts the limit for this user
            session.add(UserLimits(user_id="other", tokens_per_day=5))
            await session.commit()
        await app.state.chat_service.quotas.refresh()  # what every heartbeat does
        for _ in range(3):
            assert (await chat(client, {"message": "hi"})).types[-1] == "done"
        limits = app.state.chat_service.quotas.limits_of
        assert (limits("other").tokens_per_day, limits("other").messages_per_minute) == (5, 1)


async def test_a_message_a_quota_refuses_is_not_counted_against_the_minute(make_settings: Callable[..., Settings]):
    """One statement on PostgreSQL reads the quotas' usage and counts the message only if no quota refuses it."""
    await fresh_minute()
    settings = make_settings(tokens_per_day=100, messages_per_minute=2)
    database = create_database(settings)
    quotas = LimitsService(database, settings)
    try:
        first = await quotas.admit("u", message=True)
        assert first.counted_in is not None and first.budget is not None and first.budget.tokens == 100
        async with database.engine.begin() as conn:
            await conn.execute(insert(UsageDaily).values(user_id="u", day=datetime.now(UTC).date(), total_tokens=100))
        for _ in range(3):  # over the daily quota: refused, and none of these is counted
            with pytest.raises(LimitExceededError) as refused:
                await quotas.admit("u", message=True)
            assert (refused.value.refusal.code, refused.value.refusal.limit_name) == (
                "quota_exceeded",
                "tokens_per_day",
            )
        assert await window_counts(database) == [1]
        quotas.overrides["u"] = (0, None, None, None, None)  # the operator lifts the daily quota
        await quotas.admit("u", message=True)  # the second message of the minute
        with pytest.raises(LimitExceededError) as limited:
            await quotas.admit("u", message=True)
        assert (limited.value.refusal.code, limited.value.refusal.usage) == ("rate_limited", 2)
        assert await window_counts(database) == [2]
        answer = await quotas.admit("u", message=False)  # an answer to a paused turn is never counted
        assert answer.counted_in is None
        assert await window_counts(database) == [2]
    finally:
        await database.dispose()


async def test_an_admission_in_a_turns_transaction_takes_the_turn_lock_in_its_statement(
    make_settings: Callable[..., Settings],
):
    """On PostgreSQL the running-turns lock is taken by the admission's own statement and held to the commit; the
    count is part of the transaction (rolled back with it)."""
    await fresh_minute()
    settings = make_settings(tokens_per_day=100, messages_per_minute=5)
    database = create_database(settings)
    quotas = LimitsService(database, settings)
    postgres = database.engine.dialect.name == "postgresql"
    try:
        async with database.engine.connect() as conn:
            transaction = await conn.begin()
            admission = await quotas.admit("u", message=True, conn=conn, lock_key="turns:u")
            assert admission.locked is postgres and admission.counted_in is not None
            if postgres:
                async with database.engine.connect() as other:
                    taken = await other.execute(
                        text("SELECT pg_try_advisory_xact_lock(hashtextextended('turns:u', 0))")
                    )
                    assert taken.scalar_one() is False  # held by the admission's transaction
            await transaction.rollback()
        assert await window_counts(database) == []  # rolled back with the turn that did not begin
    finally:
        await database.dispose()


async def window_counts(database: Database) -> list[int]:
    async with database.engine.connect() as conn:
        return list((await conn.execute(select(col(RateWindow.count)))).scalars())


@pytest.fixture
def settings_with(make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    """Offline-model settings with some limits (the offline model's words come at once)."""
    return make_settings


# --- two processes, one quota (PostgreSQL) --------------------------------------------------------------------------

_ADMIT = """
import asyncio, json, sys
from backend.db import create_database
from backend.settings import load_settings
from backend.usage.limits import LimitExceededError, LimitsService

async def main():
    settings = load_settings(database_url=sys.argv[1], messages_per_minute=int(sys.argv[2]), auth_secret="x" * 32)
    database = create_database(settings)
    quotas = LimitsService(database, settings)

    async def one():
        try:
            await quotas.admit("shared-user", message=True)
            return 1
        except LimitExceededError:
            return 0

    admitted = sum(await asyncio.gather(*(one() for _ in range(15))))
    await database.dispose()
    print(json.dumps(admitted))

asyncio.run(main())
"""


@pytest.mark.timeout(240)  # two interpreters start on a shared, busy machine
async def test_two_processes_share_one_rate_limit(database_url, clean_db):
    if not database_url.startswith("postgresql"):
        pytest.skip("the cross-process test runs on PostgreSQL")
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    await fresh_minute()  # both processes must count in the same minute window
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _ADMIT,
            database_url,
            "7",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=str(PROJECT_ROOT),
        )
        for _ in range(2)
    ]
    outputs = [await proc.communicate() for proc in procs]
    admitted = [json.loads(out.decode().strip().splitlines()[-1]) for out, _err in outputs]
    assert sum(admitted) == 7, (admitted, [err.decode()[-500:] for _out, err in outputs])


async def test_the_operators_commands_set_limits_and_report_every_user(client, db, clean_db, monkeypatch, capsys):
    assert (await chat(client, {"message": "list my tasks"})).types[-1] == "done"
    monkeypatch.setenv("DATABASE_URL", clean_db)
    monkeypatch.setenv("MESSAGES_PER_MINUTE", "9")
    await cli.run(["limits", "set", "alice", "--tokens-per-day", "100", "--usd-per-month", "2.5"])
    assert json.loads(capsys.readouterr().out) == {
        "user_id": "alice",
        "tokens_per_day": 100,
        "tokens_per_month": 0,
        "usd_per_month": 2.5,
        "messages_per_minute": 9,
        "max_turns_per_user": 3,  # the setting's default
    }
    await cli.run(["limits", "set", "alice", "--tokens-per-day", "default", "--messages-per-minute", "0"])
    assert json.loads(capsys.readouterr().out)["tokens_per_day"] == 0  # back to the setting (none)
    await cli.run(["limits", "show"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["settings"]["messages_per_minute"] == 9
    assert (
        lines[1]["user_id"] == "alice" and lines[1]["messages_per_minute"] == 0 and lines[1]["tokens_per_day"] is None
    )
    with pytest.raises(InvalidInputError):
        await cli.run(["limits", "set", "alice", "--tokens-per-day", "-3"])
    await cli.run(["limits", "clear", "alice"])
    capsys.readouterr()
    await cli.run(["usage", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["group_by"] == "user"
    assert [(g["key"], g["calls"]) for g in report["data"]] == [("local", 3)]
    await cli.run(["usage", "--group-by", "model"])
    table = capsys.readouterr().out.splitlines()
    assert table[1].split()[:2] == ["offline-demo", "3"] and table[-1].split()[:2] == ["total", "3"]


@pytest.mark.parametrize(
    ("model", "tokens"),
    [(MODEL, (1200, 300, 0)), (MODEL, (5000, 10, 4000)), ("gemini/gemini-2.5-pro", (250_000, 900, 0))],
)
def test_prices_match_litellms_cost_map(model: str, tokens: tuple[int, int, int]):
    input_tokens, output_tokens, cached = tokens
    expected = sum(
        litellm.cost_per_token(
            model=model, prompt_tokens=input_tokens, completion_tokens=output_tokens, cache_read_input_tokens=cached
        )
    )
    assert price(model, input_tokens, output_tokens, cached) == (pytest.approx(expected), True)
    assert price("no-such-model-anywhere", 10, 10, 0) == (0.0, False)
