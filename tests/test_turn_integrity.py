"""Turns under races and failures (issue 18): actions against a pause or each other, rejoins at the very end of a
turn, a final save that fails, repeated answers, and text the databases cannot hold inside a tool call.

Real uvicorn, the real Agents SDK and LiteLLM against the fake Gemini, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from backend.settings import Settings
from tests.conftest import live
from tests.fakes.gemini import FakeGemini, function_call_turn, handoff_turn, text_turn
from tests.sse import chat
from tests.test_agent_ui import detail, well_formed

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
