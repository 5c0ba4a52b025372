"""Turns under races and failures (issue 18): actions against a pause or each other, rejoins at the very end of a
turn, a final save that fails, repeated answers, and text the databases cannot hold inside a tool call.

Real uvicorn, the real Agents SDK and LiteLLM against the fake Gemini, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from backend.settings import Settings
from tests.chat.test_agent_ui import detail, well_formed
from tests.conftest import live
from tests.fakes.gemini import FakeGemini, function_call_turn, handoff_turn, text_turn
from tests.sse import Stream, chat, rejoin

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def client(gemini_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    async with live(gemini_settings()) as http:
        yield http


async def add_tasks(client: httpx.AsyncClient, *titles: str) -> list[str]:
    ids = []
    for title in titles:
        created = await client.post("/api/tasks", json={"title": title})
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
    return ids


def toggle(conversation_id: str, task_id: str) -> dict[str, Any]:
    return {
        "thread_id": conversation_id,
        "action": {"type": "tasks.toggle", "payload": {"task_id": task_id, "completed": True}},
    }


# --- 2. a widget action while an approval waits --------------------------------------------------------------------


async def test_a_widget_action_while_an_approval_waits_is_refused_naming_it_and_the_approval_still_works(
    client: httpx.AsyncClient, fake: FakeGemini
):
    _milk, bread = await add_tasks(client, "milk", "bread")
    fake.script(handoff_turn(), function_call_turn("delete_task", {"task": "milk"}))
    paused = well_formed(await chat(client, {"message": "delete milk"}))
    approval = paused.of("approval_request")[0]
    conversation_id = paused.events[0]["conversation_id"]

    refused = await chat(client, toggle(conversation_id, bread))
    assert refused.status == 409, refused.events
    assert refused.body["error"]["code"] == "answer_pending"
    assert approval["id"] in refused.body["error"]["message"] and "delete_task" in refused.body["error"]["message"]
    assert not any(t["completed"] for t in (await client.get("/api/tasks")).json()["data"]), "nothing was changed"

    fake.script(text_turn("Deleted milk."))
    body = {"thread_id": conversation_id, "approvals": [{"id": approval["id"], "approve": True}]}
    resumed = well_formed(await chat(client, body))
    assert resumed.text == "Deleted milk." and resumed.events[-1]["finish_reason"] == "stop"
    messages = (await detail(client, conversation_id))["messages"]
    assert [m["status"] for m in messages] == ["complete", "complete"]
    assert well_formed(await chat(client, toggle(conversation_id, bread))).text.startswith("Completed")


# --- 3. concurrent widget actions ------------------------------------------------------------------------------------


async def test_concurrent_widget_actions_and_a_racing_message_never_answer_500(
    client: httpx.AsyncClient, fake: FakeGemini
):
    task_ids = await add_tasks(client, *(f"task {i}" for i in range(10)))
    fake.script(text_turn("Hello."))
    first = well_formed(await chat(client, {"message": "hi"}))
    conversation_id = first.events[0]["conversation_id"]

    acted = await asyncio.gather(*(chat(client, toggle(conversation_id, task_id)) for task_id in task_ids))
    assert [a.status for a in acted] == [200] * 10, [a.body for a in acted if a.status != 200]
    for stream in acted:
        assert well_formed(stream).text.startswith("Completed")
    assert all(t["completed"] for t in (await client.get("/api/tasks")).json()["data"])

    more = await add_tasks(client, *(f"more {i}" for i in range(10)))
    for task_id in more:  # an action racing a new message: both land, in some order
        fake.script(text_turn("Sure."))
        message, action = await asyncio.gather(
            chat(client, {"message": "and now?", "thread_id": conversation_id}),
            chat(client, toggle(conversation_id, task_id)),
        )
        assert message.status == 200, message.body
        assert action.status == 200, action.body
        well_formed(message)
        well_formed(action)

    messages = (await detail(client, conversation_id))["messages"]
    completed_replies = [m for m in messages if m["content"].startswith("Completed")]
    assert len(completed_replies) == 20, "each action's change and its message were stored together"
    assert len(messages) == 2 + 10 + 10 * 3
    assert sum(t["completed"] for t in (await client.get("/api/tasks")).json()["data"]) == 20


# --- rejoining past the end ----------------------------------------------------------------------------------------


async def test_a_rejoin_past_the_end_gets_the_turns_real_done(client: httpx.AsyncClient, fake: FakeGemini):
    fake.script(text_turn([f"w{i} " for i in range(30)], delay=0.05))
    first = await chat(client, {"message": "a story"}, stop_after_texts=1)  # the turn goes on without its client
    message_id = first.events[0]["message_id"]
    running = await rejoin(client, message_id, last_event_id=9999)  # while the turn runs
    full = well_formed(await rejoin(client, message_id))
    done = next(f for f in full.frames if f.type == "done")
    after = await rejoin(client, message_id, last_event_id=9999)  # after it ended
    for stream in (running, after):
        assert stream.status == 200
        assert stream.types == ["done"], stream.types
        assert stream.frames[0].id == done.id and stream.events[0] == done.data
        assert stream.frames[-1].done_sentinel


# --- 6. rejoins right at the end of a turn ---------------------------------------------------------------------------


async def test_rejoins_at_the_end_of_a_turn_replay_it_without_gaps(
    gemini_settings: Callable[..., Settings], fake: FakeGemini
):
    rounds, followers, gaps, seen = 12, 6, [], 0
    conversation_id: str | None = None
    async with live(gemini_settings(event_flush_seconds=0.02)) as client:
        for _ in range(rounds):
            fake.script(text_turn([f"w{i} " for i in range(80)], delay=0.004))
            body: dict[str, Any] = {"message": "go"}
            if conversation_id is not None:
                body["thread_id"] = conversation_id
            first = await chat(client, body, stop_after_texts=1)
            conversation_id = first.events[0]["conversation_id"]
            message_id = first.events[0]["message_id"]

            async def at_the_end(message_id: str = message_id) -> list[Stream]:
                following = await rejoin(client, message_id)  # live, to its end
                return [following, await rejoin(client, message_id)]  # and again, right after the end

            for streams in await asyncio.gather(*(at_the_end() for _ in range(followers))):
                for stream in streams:
                    seen += 1
                    ids = [f.id for f in stream.frames if f.id is not None]
                    if ids != list(range(1, len(ids) + 1)) or stream.types[-1] != "done":
                        gaps.append(ids)
    assert seen == rounds * followers * 2
    assert gaps == [], f"{len(gaps)} of {seen} rejoins had gaps, e.g. {gaps[0]}"


# --- 8 and 9. a final save that fails --------------------------------------------------------------------------------


async def _refuse_completion(database_url: str, *, integrity: bool) -> None:
    """Make every write of status `complete` to a message fail (an integrity error, or another database error)."""
    engine = create_async_engine(database_url)
    async with engine.begin() as conn:
        if database_url.startswith("sqlite"):
            assert integrity, "SQLite's RAISE is a constraint failure"
            await conn.execute(
                text(
                    "CREATE TRIGGER refuse_complete BEFORE UPDATE OF status ON messages "
                    "WHEN NEW.status = 'complete' BEGIN SELECT RAISE(ABORT, 'refused'); END"
                )
            )
        else:
            errcode = "check_violation" if integrity else "raise_exception"
            await conn.execute(
                text(
                    "CREATE OR REPLACE FUNCTION refuse_complete() RETURNS trigger AS $$ BEGIN "
                    "IF NEW.status = 'complete' THEN "
                    f"RAISE EXCEPTION 'refused' USING ERRCODE = '{errcode}'; END IF; RETURN NEW; END $$ "
                    "LANGUAGE plpgsql"
                )
            )
            await conn.execute(
                text(
                    "CREATE TRIGGER refuse_complete BEFORE UPDATE ON messages "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_complete()"
                )
            )
    await engine.dispose()


async def _allow_completion(database_url: str) -> None:
    engine = create_async_engine(database_url)
    async with engine.begin() as conn:
        await conn.execute(
            text("DROP TRIGGER IF EXISTS refuse_complete" + ("" if "sqlite" in database_url else " ON messages"))
        )
    await engine.dispose()


@pytest.mark.parametrize("integrity", [True, False], ids=["integrity_error", "other_error"])
async def test_a_failed_final_save_closes_the_reply_with_its_full_text(
    gemini_settings: Callable[..., Settings], fake: FakeGemini, clean_db: str, integrity: bool
):
    if not integrity and clean_db.startswith("sqlite"):
        pytest.skip("on SQLite every trigger failure is an integrity error")
    settings = gemini_settings(event_flush_seconds=5.0)  # nothing reaches the log before the final save
    reply = "The whole reply, held in memory."
    async with live(settings) as client:
        fake.script(text_turn("Hello."))
        first = well_formed(await chat(client, {"message": "hi"}))
        conversation_id = first.events[0]["conversation_id"]
        await _refuse_completion(clean_db, integrity=integrity)
        try:
            fake.script(text_turn(reply))
            failed = well_formed(await chat(client, {"message": "again", "thread_id": conversation_id}))
            assert failed.text == reply
            assert failed.of("error")[0]["code"] == "internal"
            assert failed.events[-1]["finish_reason"] == "error"
            message_id = failed.events[0]["message_id"]

            for _ in range(100):  # the reply is closed in the background
                stored = (await detail(client, conversation_id))["messages"][-1]
                if stored["status"] != "in_progress":
                    break
                await asyncio.sleep(0.1)
            assert stored["status"] == "error" and stored["error_code"] == "internal"
            assert stored["content"] == reply, "the full reply held in memory is kept"
            replay = well_formed(await asyncio.wait_for(rejoin(client, message_id), 30))
            assert replay.text == reply and replay.events[-1]["finish_reason"] == "error"
            assert [f.id for f in replay.frames if f.id is not None] == [
                f.id for f in failed.frames if f.id is not None
            ]
        finally:
            await _allow_completion(clean_db)
        fake.script(text_turn("Back."))
        assert well_formed(await chat(client, {"message": "more", "thread_id": conversation_id})).text == "Back."


# --- 10. two answers for one approval --------------------------------------------------------------------------------


async def test_two_answers_for_the_same_id_in_one_request_are_422(client: httpx.AsyncClient, fake: FakeGemini):
    await add_tasks(client, "milk")
    fake.script(handoff_turn(), function_call_turn("delete_task", {"task": "milk"}))
    paused = well_formed(await chat(client, {"message": "delete milk"}))
    approval = paused.of("approval_request")[0]
    conversation_id = paused.events[0]["conversation_id"]
    both = {
        "thread_id": conversation_id,
        "approvals": [{"id": approval["id"], "approve": True}, {"id": approval["id"], "approve": False}],
    }
    answered = await chat(client, both)
    assert answered.status == 422, answered.events
    assert approval["id"] in answered.body["error"]["message"]
    results = {
        "thread_id": conversation_id,
        "client_tool_results": [{"id": "c1", "result": 1}, {"id": "c1", "result": 2}],
    }
    assert (await chat(client, results)).status == 422
    assert (await detail(client, conversation_id))["messages"][1]["status"] == "requires_action"
    assert [t["title"] for t in (await client.get("/api/tasks")).json()["data"]] == ["milk"]


# --- 13. a lone surrogate in a tool call's arguments -----------------------------------------------------------------


async def test_a_lone_surrogate_in_tool_arguments_is_replayed_as_storable_text(
    client: httpx.AsyncClient, fake: FakeGemini
):
    fake.script(handoff_turn(), function_call_turn("add_task", {"title": "milk \ud800 now"}), text_turn("Added."))
    added = well_formed(await chat(client, {"message": "add milk"}))
    assert added.text == "Added.", added.of("error")
    conversation_id = added.events[0]["conversation_id"]
    fake.script(text_turn("You have one task."))
    again = well_formed(await chat(client, {"message": "what do I have?", "thread_id": conversation_id}))
    assert again.of("error") == [] and again.text == "You have one task."
    replayed = str(fake.requests[-1]["contents"])
    assert "milk \ufffd now" in replayed
    assert uuid.UUID(again.events[0]["message_id"])
