"""Generated conversation titles: the first reply's `done` never waits for the title call, a failed or slow call
keeps the first-message title, a user's rename wins, each title call is in the usage ledger (and the user's daily
total), and the offline demo's title is deterministic. Real uvicorn, the real LiteLLM path on the fake Gemini (whose
unary queue answers the title call), both databases."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import litellm
import pytest
from sqlalchemy import select
from sqlmodel import col

from backend.chat.titles import INSTRUCTIONS, TITLE_AGENT, clean_title
from backend.db import Database
from backend.settings import Settings
from backend.team.offline import offline_title
from backend.usage.models import UsageDaily, UsageRecord
from tests.conftest import live
from tests.fakes.gemini import FakeGemini, error_turn, text_turn
from tests.sse import chat

pytestmark = pytest.mark.timeout(90)

MESSAGE = "please help me plan the weekly shopping for milk and bread"
FIRST_MESSAGE_TITLE = "please help me plan the weekly shopping for milk…"  # make_title's cut at a word boundary
LOGGER = "backend.chat.service"


async def title_of(client: httpx.AsyncClient, conversation_id: str) -> str:
    response = await client.get(f"/api/conversations/{conversation_id}")
    assert response.status_code == 200, response.text
    return str(response.json()["title"])


async def listed_title(client: httpx.AsyncClient, conversation_id: str) -> str:
    response = await client.get("/api/conversations")
    (summary,) = [c for c in response.json()["data"] if c["id"] == conversation_id]
    return str(summary["title"])


async def wait_for(predicate: Callable[[], Any], what: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.05)


async def title_rows(db: Database) -> list[UsageRecord]:
    async with db.sessions() as session:
        rows = (await session.exec(select(UsageRecord).where(col(UsageRecord.agent) == TITLE_AGENT))).scalars()
        return list(rows)


def title_requests(fake: FakeGemini) -> list[dict[str, Any]]:
    return [r for r in fake.requests if r["method"] == "generateContent"]


class Records(logging.Handler):
    """Every record the app logs (the app's logging config replaces pytest's handlers, so records sees nothing)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records() -> Iterator[Records]:
    """Records of the running app, with the chat service's INFO lines; attach after the app configured logging."""
    handler = Records()
    service = logging.getLogger(LOGGER)
    level = service.level
    service.setLevel(logging.INFO)
    yield handler
    service.setLevel(level)
    logging.getLogger().removeHandler(handler)


@asynccontextmanager
async def app(settings: Settings, records: Records) -> AsyncIterator[httpx.AsyncClient]:
    async with live(settings) as client:
        logging.getLogger().addHandler(records)
        yield client


def logged(records: Records, text: str) -> Callable[[], Any]:
    async def check() -> bool:
        return any(text in record.getMessage() for record in records.records)

    return check


def assert_text_never_logged(records: Records, *texts: str) -> None:
    assert records.records, "nothing was logged: the check would prove nothing"
    for record in records.records:
        for text in texts:
            assert text not in record.getMessage(), record.getMessage()


async def test_a_quick_title_arrives_on_the_open_stream_before_done(gemini_settings, fake, records):
    fake.script_unary(text_turn('"Weekly Shopping Plan."'))
    fake.script(text_turn(["Sure, ", "here is ", "a plan."], first_delay=4.0))  # the reply outlasts the title call
    async with app(gemini_settings(titles=True, title_model="gemini/gemini-title-lite"), records) as client:
        stream = await chat(client, {"message": MESSAGE})
        assert stream.types[0] == "start" and stream.types[-1] == "done"
        assert stream.events[0]["title"] == FIRST_MESSAGE_TITLE
        conversation_id = stream.events[0]["conversation_id"]
        (title,) = stream.of("title")
        assert title == {"type": "title", "conversation_id": conversation_id, "title": "Weekly Shopping Plan"}
        assert stream.types.index("title") < stream.types.index("done")
        assert await title_of(client, conversation_id) == "Weekly Shopping Plan"
        assert await listed_title(client, conversation_id) == "Weekly Shopping Plan"

    (request,) = title_requests(fake)
    assert request["model"] == "gemini-title-lite"  # TITLE_MODEL, with the chat's key and base URL
    assert request["api_key"] == "test-key"
    sent = str({key: value for key, value in request.items() if key != "headers"})  # system or merged into contents
    assert INSTRUCTIONS in sent and MESSAGE in sent
    assert_text_never_logged(records, MESSAGE, "Weekly Shopping Plan")


async def test_a_slow_title_call_never_delays_done_and_lands_on_the_next_list(gemini_settings, fake, records):
    fake.script_unary(text_turn("Late Title", first_delay=6.0))
    fake.script(text_turn("Noted."))
    async with app(gemini_settings(titles=True), records) as client:
        stream = await chat(client, {"message": MESSAGE})
        assert stream.types[-1] == "done" and stream.events[-1]["finish_reason"] == "stop"
        conversation_id = stream.events[0]["conversation_id"]
        # `done` came while the title call was still waiting on the model.
        assert fake.state()["active"] == 1 and len(title_requests(fake)) == 1
        assert "title" not in stream.types
        assert await title_of(client, conversation_id) == FIRST_MESSAGE_TITLE

        async def titled() -> bool:
            return await listed_title(client, conversation_id) == "Late Title"

        await wait_for(titled, "the late title on the list")
        await wait_for(logged(records, "titled by the model (stored)"), "the title stored after done")


async def test_a_title_call_is_in_the_usage_ledger_priced_and_counted_in_the_daily_total(gemini_settings, fake, db):
    model = "gemini/gemini-2.5-flash-lite"
    fake.script_unary(text_turn("Shopping Plan", usage=(40, 3)))
    fake.script(text_turn("Noted.", usage=(12, 2)))
    async with live(gemini_settings(titles=True, title_model=model)) as client:
        stream = await chat(client, {"message": MESSAGE})
        conversation_id = stream.events[0]["conversation_id"]

        async def titled() -> bool:
            return await listed_title(client, conversation_id) == "Shopping Plan"

        async def recorded() -> bool:
            return bool(await title_rows(db))

        await wait_for(titled, "the model's title")
        await wait_for(recorded, "the title call's ledger row")
    (row,) = await title_rows(db)
    assert (row.model, row.user_id, str(row.conversation_id), row.message_id) == (model, "local", conversation_id, None)
    assert (row.input_tokens, row.output_tokens, row.total_tokens, row.outcome) == (40, 3, 43, "ok")
    expected = sum(litellm.cost_per_token(model=model, prompt_tokens=40, completion_tokens=3))
    assert row.priced and row.cost_usd == pytest.approx(expected) and row.cost_usd > 0
    async with db.sessions() as session:
        (daily,) = (await session.exec(select(UsageDaily))).scalars().all()
    assert daily.total_tokens == 43 + 14  # the title call and the reply's call: the quota counts both


async def test_a_failed_title_call_keeps_the_first_message_title(gemini_settings, fake, records, db):
    fake.script_unary(error_turn(500, "upstream secret detail"))
    fake.script(text_turn("Noted."))
    async with app(gemini_settings(titles=True), records) as client:
        stream = await chat(client, {"message": MESSAGE})
        assert stream.types[-1] == "done" and stream.events[-1]["finish_reason"] == "stop"
        conversation_id = stream.events[0]["conversation_id"]
        await wait_for(logged(records, f"title of conversation {conversation_id} failed"), "the failure logged")
        assert "title" not in stream.types
        assert await title_of(client, conversation_id) == FIRST_MESSAGE_TITLE
    assert len(title_requests(fake)) == 1  # no retry of a title
    assert_text_never_logged(records, MESSAGE, "upstream secret detail")
    (row,) = await title_rows(db)  # the call was made: counted, with no tokens and no price
    assert (row.outcome, row.total_tokens, row.priced, row.cost_usd) == ("error", 0, False, 0.0)


async def test_a_rename_while_the_title_call_runs_wins(gemini_settings, fake, records):
    fake.script_unary(text_turn("Model Title", first_delay=3.0))
    fake.script(text_turn("Noted."))
    async with app(gemini_settings(titles=True), records) as client:
        stream = await chat(client, {"message": MESSAGE})
        conversation_id = stream.events[0]["conversation_id"]
        assert fake.state()["active"] == 1  # the title call is still running
        response = await client.patch(f"/api/conversations/{conversation_id}", json={"title": FIRST_MESSAGE_TITLE})
        assert response.status_code == 200  # renamed to the very same text: still the user's title
        await wait_for(logged(records, "keeps its title: renamed by the user"), "the title call to end")
        assert await title_of(client, conversation_id) == FIRST_MESSAGE_TITLE
        # A later conversation's turn does not name an existing one again.
        fake.script(text_turn("Again."))
        await chat(client, {"message": "and eggs", "thread_id": conversation_id})
        assert len(title_requests(fake)) == 1
        assert await title_of(client, conversation_id) == FIRST_MESSAGE_TITLE


async def test_titles_off_makes_no_title_call(gemini_settings, fake):
    fake.script(text_turn("Noted."))
    async with live(gemini_settings(titles=False)) as client:
        stream = await chat(client, {"message": MESSAGE})
        assert stream.types[-1] == "done"
        assert await title_of(client, stream.events[0]["conversation_id"]) == FIRST_MESSAGE_TITLE
    assert title_requests(fake) == []


async def test_the_offline_demo_names_a_conversation_deterministically(make_settings: Callable[..., Settings], db):
    async with live(make_settings(titles=True)) as client:
        ids = []
        for _ in range(2):
            stream = await chat(client, {"message": "add buy milk, please!"})
            assert stream.types[-1] == "done"
            ids.append(stream.events[0]["conversation_id"])
        for conversation_id in ids:

            async def titled(conversation_id: str = conversation_id) -> bool:
                return await title_of(client, conversation_id) == "Add Buy Milk Please"

            await wait_for(titled, "the offline title")
    assert await title_rows(db) == []  # no model call, no ledger row


def test_offline_titles_and_the_cleaning_of_model_answers():
    assert offline_title("add buy milk") == "Add Buy Milk"
    assert offline_title("what's the café's hours? éclair — ok") == "What's The Café's Hours Éclair Ok"
    assert offline_title("one two three four five six seven") == "One Two Three Four Five Six"
    assert offline_title("!!!") == ""
    assert clean_title('"Buying Milk"') == "Buying Milk"
    assert clean_title("Title: **Groceries list**.") == "Groceries list"
    assert clean_title("\n\n  Trip   to Paris  \nsecond line") == "Trip to Paris"
    assert clean_title("“Café plans”") == "Café plans"
    assert clean_title(" \n ** \n") is None
