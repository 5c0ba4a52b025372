"""Versions and branches end to end: edits, regenerations, switching, what the model is given; both databases.

Real uvicorn, the real Agents SDK and LiteLLM on the fake Gemini, which records every request: the replayed input is
checked for the active branch only.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from backend.db import create_database
from backend.settings import Settings
from tests.conftest import SECRET, bearer, error_of, live
from tests.fakes.gemini import FakeGemini, function_call_turn, handoff_turn, said, text_turn
from tests.seeding import seed_conversation
from tests.sse import Stream, chat, read_stream

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def client(gemini_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    async with live(gemini_settings()) as http:
        yield http


async def regenerate(
    client: httpx.AsyncClient, conversation_id: str, message_id: str, headers: dict[str, str] | None = None, **body: Any
) -> Stream:
    path = f"/api/conversations/{conversation_id}/messages/{message_id}/regenerate"
    return await read_stream(client, "POST", path, json=body, headers=headers)


async def detail(client: httpx.AsyncClient, conversation_id: str, **headers: str) -> dict[str, Any]:
    response = await client.get(f"/api/conversations/{conversation_id}", headers=headers or None)
    assert response.status_code == 200, response.text
    return response.json()


def path_of(conversation: dict[str, Any]) -> list[str]:
    return [m["content"] for m in conversation["messages"]]


def versions(conversation: dict[str, Any]) -> list[tuple[int, int]]:
    return [(m["sibling_index"] + 1, m["sibling_count"]) for m in conversation["messages"]]


async def switch(client: httpx.AsyncClient, conversation_id: str, message_id: str, **headers: str) -> httpx.Response:
    return await client.put(
        f"/api/conversations/{conversation_id}/branch", json={"message_id": message_id}, headers=headers or None
    )


async def test_a_tree_of_edits_and_regenerations_replays_only_the_active_branch(client, fake: FakeGemini):
    fake.script(text_turn("a1"), text_turn("a2"))
    first = await chat(client, {"message": "q1"})
    cid = first.events[0]["conversation_id"]
    await chat(client, {"message": "q2", "thread_id": cid})
    q1, a1, q2, a2 = (m["id"] for m in (await detail(client, cid))["messages"])

    # Regenerate the last reply: a sibling of it; the model is not shown the old reply.
    fake.script(text_turn("a2b"))
    again = await regenerate(client, cid, a2)
    assert again.status == 200 and again.types[0] == "start" and again.types[-1] == "done"
    assert again.frames[-1].done_sentinel and again.text == "a2b"
    assert said(fake.requests[-1]) == ["user: q1", "model: a1", "user: q2"]
    tree = await detail(client, cid)
    assert path_of(tree) == ["q1", "a1", "q2", "a2b"]
    assert versions(tree) == [(1, 1), (1, 1), (1, 1), (2, 2)]
    a2b = tree["messages"][-1]["id"]
    assert tree["messages"][-1]["sibling_ids"] == [a2, a2b]
    assert tree["messages"][-1]["parent_id"] == q2
    assert tree["active_leaf_id"] == a2b == again.events[0]["message_id"]

    # Edit q2: a sibling of it, and the reply follows the new version.
    fake.script(text_turn("a3"))
    edited = await chat(client, {"message": "q2 edited", "thread_id": cid, "edit_of": q2})
    assert edited.text == "a3"
    assert said(fake.requests[-1]) == ["user: q1", "model: a1", "user: q2 edited"]
    tree = await detail(client, cid)
    assert path_of(tree) == ["q1", "a1", "q2 edited", "a3"]
    assert versions(tree) == [(1, 1), (1, 1), (2, 2), (1, 1)]
    q2b = tree["messages"][2]["id"]

    fake.script(text_turn("a4"))
    await chat(client, {"message": "q4", "thread_id": cid})
    assert said(fake.requests[-1]) == ["user: q1", "model: a1", "user: q2 edited", "model: a3", "user: q4"]

    # Back to the first version of q2: its branch ends at its newest message, and the model continues from there.
    switched = await switch(client, cid, q2)
    assert switched.status_code == 200, switched.text
    assert path_of(switched.json()) == ["q1", "a1", "q2", "a2b"]
    assert versions(switched.json()) == [(1, 1), (1, 1), (1, 2), (2, 2)]
    fake.script(text_turn("a5"))
    await chat(client, {"message": "q5", "thread_id": cid})
    assert said(fake.requests[-1]) == ["user: q1", "model: a1", "user: q2", "model: a2b", "user: q5"]

    # Regenerate by naming the user message: a new first reply; everything under the old one stays reachable.
    fake.script(text_turn("a1b"))
    assert (await regenerate(client, cid, q1)).text == "a1b"
    assert said(fake.requests[-1]) == ["user: q1"]
    assert path_of(await detail(client, cid)) == ["q1", "a1b"]
    back = await switch(client, cid, a1)
    assert path_of(back.json()) == ["q1", "a1", "q2", "a2b", "q5", "a5"]
    assert (await switch(client, cid, q2b)).json()["messages"][-1]["content"] == "a4"
    assert path_of(await detail(client, cid)) == ["q1", "a1", "q2 edited", "a3", "q4", "a4"], "the switch is stored"
    assert len(fake.requests) == 7, "switching branches never calls the model"


async def test_a_regeneration_is_idempotent_refused_while_a_reply_runs_and_stoppable(client, fake: FakeGemini):
    fake.script(text_turn("first"))
    started = await chat(client, {"message": "q"})
    cid = started.events[0]["conversation_id"]
    reply = started.events[0]["message_id"]
    key = str(uuid.uuid4())
    fake.script(text_turn(["slow ", "second "] * 10, delay=0.05))
    running = await regenerate(client, cid, reply, client_message_id=key)
    assert running.text == "slow second " * 10
    repeat = await regenerate(client, cid, reply, client_message_id=key)
    assert repeat.events[0]["message_id"] == running.events[0]["message_id"], "a retry follows the first regeneration"
    assert len(fake.requests) == 2
    fake.script(text_turn(["w "] * 40, delay=0.5))  # 20 s: stopped long before it ends
    busy = asyncio.create_task(regenerate(client, cid, reply))
    assert await fake.wait_until(lambda f: len(f.requests) == 3, within=10)
    assert (await regenerate(client, cid, reply)).error_body["error"]["code"] == "run_in_progress"
    assert error_of(await switch(client, cid, reply)) == {
        "error": {
            "code": "run_in_progress",
            "message": "A reply is being generated in this conversation; switch branches when it is done.",
        }
    }
    stopped = (await client.post(f"/api/conversations/{cid}/stop")).json()
    assert stopped["stopped"] is True and stopped["status"] == "cancelled"
    ended = await busy
    assert ended.types[-1] == "done" and ended.of("done")[0]["finish_reason"] == "cancelled"
    tree = await detail(client, cid)
    assert versions(tree)[-1] == (3, 3) and tree["messages"][-1]["status"] == "cancelled"


async def test_regenerating_a_paused_reply_cancels_it_and_a_pause_on_another_branch_is_cancelled(
    client, fake: FakeGemini
):
    await client.post("/api/tasks", json={"title": "milk"})
    await client.post("/api/tasks", json={"title": "bread"})
    fake.script(handoff_turn(), function_call_turn("delete_task", {"task": "milk"}))
    paused = await chat(client, {"message": "delete milk"})
    cid = paused.events[0]["conversation_id"]
    assert paused.of("done")[0]["finish_reason"] == "approval_required"
    paused_id = paused.events[0]["message_id"]

    # Regenerate the paused reply: it is cancelled and kept as a sibling; the new reply asks again.
    fake.script(handoff_turn(), function_call_turn("delete_task", {"task": "milk"}))  # from triage again
    again = await regenerate(client, cid, paused_id)
    assert again.of("done")[0]["finish_reason"] == "approval_required"
    tree = await detail(client, cid)
    assert versions(tree) == [(1, 1), (2, 2)]
    old = next(m for m in (await switch(client, cid, paused_id)).json()["messages"] if m["id"] == paused_id)
    assert old["status"] == "cancelled"
    assert [p["decision"] for p in old["parts"] if p["type"] == "approval"] == ["cancelled"]

    # The new pause is on the other branch now; a message on this branch cancels it too.
    fake.script(text_turn("ok"))
    await chat(client, {"message": "never mind", "thread_id": cid})
    tree = await switch(client, cid, again.events[0]["message_id"])
    assert tree.json()["messages"][-1]["status"] == "cancelled"
    answer = await chat(
        client, {"thread_id": cid, "approvals": [{"id": again.of("approval_request")[0]["id"], "approve": True}]}
    )
    assert answer.error_body["error"]["code"] == "nothing_pending"
    titles = {t["title"] for t in (await client.get("/api/tasks")).json()["data"]}
    assert titles == {"milk", "bread"}, "no cancelled approval ran"


async def test_another_users_messages_are_404_for_regenerate_edit_and_switch(gemini_settings, fake: FakeGemini):
    alice, bob = bearer("alice"), bearer("bob")
    async with live(gemini_settings(auth_secret=SECRET)) as client:
        fake.script(text_turn("for alice"), text_turn("for bob"))
        mine = await chat(client, {"message": "alice asks"}, headers=alice)
        theirs = await chat(client, {"message": "bob asks"}, headers=bob)
        cid, reply = mine.events[0]["conversation_id"], mine.events[0]["message_id"]
        bob_cid = theirs.events[0]["conversation_id"]
        question = (await detail(client, cid, **alice))["messages"][0]["id"]

        for conversation in (cid, bob_cid):
            refused = await regenerate(client, conversation, reply, headers=bob)
            assert refused.status == 404 and refused.error_body["error"]["code"] == "not_found"
            assert (await switch(client, conversation, question, **bob)).status_code == 404
            edit = await chat(client, {"message": "x", "thread_id": conversation, "edit_of": question}, headers=bob)
            assert edit.status == 404 and edit.error_body["error"]["code"] == "not_found"
        unknown = await regenerate(client, cid, str(uuid.uuid4()), headers=alice)
        assert unknown.status == 404
        assert len(fake.requests) == 2
        assert path_of(await detail(client, cid, **alice)) == ["alice asks", "for alice"]
        assert path_of(await detail(client, bob_cid, **bob)) == ["bob asks", "for bob"]


async def test_a_conversation_written_without_the_tree_reads_flat_and_is_chained_on_its_next_turn(
    gemini_settings, fake: FakeGemini
):
    settings = gemini_settings()
    database = create_database(settings)
    try:
        cid = str(
            await seed_conversation(
                database, messages=[{"content": "old q"}, {"role": "assistant", "content": "old a"}]
            )
        )
    finally:
        await database.engine.dispose()
    async with live(settings) as client:
        flat = await detail(client, cid)
        assert (path_of(flat), versions(flat), flat["active_leaf_id"]) == (["old q", "old a"], [(1, 1), (1, 1)], None)
        fake.script(text_turn("new a"))
        await chat(client, {"message": "new q", "thread_id": cid})
        assert said(fake.requests[-1]) == ["user: old q", "model: old a", "user: new q"]
        tree = await detail(client, cid)
        assert path_of(tree) == ["old q", "old a", "new q", "new a"]
        ids = [m["id"] for m in tree["messages"]]
        assert [m["parent_id"] for m in tree["messages"]] == [None, *ids[:-1]]
        assert tree["active_leaf_id"] == ids[-1]
