"""Several real server processes (`python -m backend`) on one database: crashes, takeover, and turns that cross them.

A process killed with SIGKILL runs no shutdown code, exactly like a crashed worker. The others take its turns over once
its heartbeat is stale. On PostgreSQL, a turn running in one process can be followed, stopped, repeated and resumed
from another (LISTEN/NOTIFY carries the events and the stop).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import pytest

from tests.fakes.gemini import FakeGemini, function_call_turn, handoff_turn, text_turn
from tests.servers import server_env, two_servers
from tests.sse import chat, rejoin

pytestmark = pytest.mark.timeout(400)

SLOW = [f"w{i} " for i in range(60)]


def postgres_only(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("cross-process delivery is PostgreSQL's (SQLite serves one process)")


async def test_a_killed_server_blocks_its_conversation_only_until_another_takes_it_over(
    clean_db: str, fake: FakeGemini, record_property: Callable[[str, object], None]
):
    env = server_env(clean_db, fake.base_url)  # default heartbeat (3 s) and takeover delay (10 s)
    fake.script(text_turn(SLOW, delay=0.1))
    async with two_servers(env) as pair:
        doomed, a, b = pair.one, pair.a, pair.b
        first = await chat(a, {"message": "a long story"}, stop_after_texts=5)
        conversation_id = first.events[0]["conversation_id"]
        message_id = first.events[0]["message_id"]
        await asyncio.sleep(1.0)  # a few more batches reach the log
        doomed.kill()
        killed_at = time.monotonic()
        fake.script(text_turn("I am back."))
        while True:
            again = await chat(b, {"message": "are you there?", "thread_id": conversation_id})
            if again.status != 409:
                break
            assert time.monotonic() - killed_at < 120, "the conversation stayed blocked"
            await asyncio.sleep(0.25)
        blocked_for = time.monotonic() - killed_at
        record_property("blocked_seconds_after_sigkill", round(blocked_for, 1))
        assert again.status == 200 and again.text == "I am back."

        messages = (await b.get(f"/api/conversations/{conversation_id}")).json()["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
        interrupted = messages[1]
        assert interrupted["status"] == "interrupted" and interrupted["error_code"] == "interrupted"
        assert interrupted["content"].startswith(first.text), "the text up to the last stored batch is kept"
        assert "".join(SLOW).startswith(interrupted["content"])
        replay = await rejoin(b, message_id)
        assert replay.types[-2:] == ["error", "done"] and replay.events[-1]["finish_reason"] == "interrupted"
        assert replay.frames[-1].done_sentinel


async def test_a_turn_is_followed_and_stopped_from_another_process(clean_db: str, fake: FakeGemini):
    postgres_only(clean_db)
    env = server_env(clean_db, fake.base_url)
    fake.script(text_turn(SLOW, delay=0.1))
    async with two_servers(env) as pair:
        a, b = pair.a, pair.b
        first = await chat(a, {"message": "go"}, stop_after_texts=3)
        conversation_id = first.events[0]["conversation_id"]
        message_id = first.events[0]["message_id"]
        follower = asyncio.create_task(rejoin(b, message_id, last_event_id=first.last_id))
        await asyncio.sleep(1.0)
        stopped = await b.post(f"/api/conversations/{conversation_id}/stop")
        followed = await follower

    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["status"] == "cancelled" and stopped.json()["stopped"] is True
    assert followed.frames[0].id == first.last_id + 1, "no gap and no duplicate across processes"
    assert len(followed.of("text")) >= 3, "the other process streamed the live events"
    assert followed.events[-1]["finish_reason"] == "cancelled" and followed.frames[-1].done_sentinel
    assert "".join(SLOW).startswith(first.text + followed.text)
    assert await fake.wait_until(lambda f: f.disconnects == 1, within=10), "the upstream request was closed"


async def test_a_repeated_send_and_a_paused_run_cross_processes(clean_db: str, fake: FakeGemini):
    postgres_only(clean_db)
    env = server_env(clean_db, fake.base_url)
    async with two_servers(env) as pair:
        a, b = pair.a, pair.b
        fake.script(text_turn(SLOW[:20], delay=0.1))
        body = {"message": "only once", "client_message_id": str(uuid.uuid4())}
        original = asyncio.create_task(chat(a, body))
        await fake.wait_until(lambda f: len(f.requests) == 1, within=30)
        retry = await chat(b, body)  # the retry lands on another process
        first = await original
        assert retry.events[0]["message_id"] == first.events[0]["message_id"]
        assert retry.text == first.text == "".join(SLOW[:20])
        assert len(fake.requests) == 1

        assert (await a.post("/api/tasks", json={"title": "milk"})).status_code == 201
        fake.script(handoff_turn(), function_call_turn("delete_task", {"task": "milk"}), text_turn("Deleted."))
        paused = await chat(a, {"message": "delete milk"})
        approval = paused.of("approval_request")[0]
        resumed = await chat(
            b,
            {
                "thread_id": paused.events[0]["conversation_id"],
                "approvals": [{"id": approval["id"], "approve": True}],
            },
        )
        assert resumed.status == 200 and resumed.text == "Deleted."
        assert resumed.events[0]["message_id"] == paused.events[0]["message_id"]
        assert (await a.get("/api/tasks")).json()["data"] == []
