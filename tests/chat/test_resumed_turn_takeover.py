"""A resumed turn whose process dies: the decisions are stored when the resume begins, so the takeover keeps them.

Before, the decisions lived only in the running process's memory until `finish_turn`; a process killed during the
resumed run left the approval undecided in the interrupted reply.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.fakes.gemini import FakeGemini, function_call_turn, handoff_turn, text_turn
from tests.servers import server_env, two_servers
from tests.sse import chat

pytestmark = pytest.mark.timeout(400)

SLOW = [f"w{i} " for i in range(60)]


async def test_approvals_survive_a_process_killed_during_the_resumed_run(clean_db: str, fake: FakeGemini):
    env = server_env(clean_db, fake.base_url)
    async with two_servers(env) as pair:
        doomed, a, b = pair.one, pair.a, pair.b
        assert (await a.post("/api/tasks", json={"title": "milk"})).status_code == 201
        fake.script(handoff_turn(), function_call_turn("delete_task", {"task": "milk"}), text_turn(SLOW, delay=0.1))
        paused = await chat(a, {"message": "delete milk"})
        conversation_id = paused.events[0]["conversation_id"]
        approval = paused.of("approval_request")[0]
        answer = {"thread_id": conversation_id, "approvals": [{"id": approval["id"], "approve": True, "reason": "ok"}]}
        resumed = await chat(a, answer, stop_after_texts=3)
        assert resumed.status == 200 and resumed.text
        doomed.kill()
        killed_at = time.monotonic()

        fake.script(text_turn("Back."))
        while True:  # the other process takes the turn over once the dead one's heartbeat is stale
            again = await chat(b, {"message": "still there?", "thread_id": conversation_id})
            if again.status != 409:
                break
            assert time.monotonic() - killed_at < 120, "the conversation stayed blocked"
            await asyncio.sleep(0.25)
        assert again.status == 200 and again.text == "Back."

        messages = (await b.get(f"/api/conversations/{conversation_id}")).json()["messages"]
        interrupted = messages[1]
        assert interrupted["status"] == "interrupted"
        [part] = [p for p in interrupted["parts"] if p["type"] == "approval"]
        assert part["id"] == approval["id"]
        assert (part["decision"], part["reason"]) == ("approved", "ok"), "the decision was lost with the process"
        assert (await b.get("/api/tasks")).json()["data"] == []  # the approved tool did run
