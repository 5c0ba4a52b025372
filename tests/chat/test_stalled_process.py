"""A process that stalls (SIGSTOP) while it runs a turn, is taken over, and wakes up (issue 18, point 5).

Two real server processes on PostgreSQL with a short heartbeat. When the stalled one wakes, the turn is no longer its
own: it must neither write to the turn's log nor stream the rest of the reply to its client, and it must close its
upstream model request. Its client sees `error interrupted` and `done interrupted`, as the stored reply says.
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.fakes.gemini import FakeGemini, text_turn
from tests.servers import server_env, two_servers
from tests.sse import chat, rejoin

pytestmark = pytest.mark.timeout(300)

WORDS = [f"w{i} " for i in range(240)]  # 12 s: the model still streams when the stalled process wakes


async def test_a_stalled_process_that_lost_its_turn_stops_it_and_tells_its_client(clean_db: str, fake: FakeGemini):
    if not clean_db.startswith("postgresql"):
        pytest.skip("two processes share PostgreSQL (SQLite serves one process)")
    env = server_env(clean_db, fake.base_url, HEARTBEAT_SECONDS="0.5", STALE_AFTER_SECONDS="2")
    fake.script(text_turn(WORDS, delay=0.05))
    async with two_servers(env) as pair:
        stalled, a, b = pair.one, pair.a, pair.b
        original = asyncio.create_task(chat(a, {"message": "a long story"}))
        await fake.wait_until(lambda f: len(f.requests) == 1, within=60)
        await asyncio.sleep(1.0)  # some of the reply streams and is logged
        stalled.process.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:
            conversation_id = None
            while conversation_id is None:
                listed = (await b.get("/api/conversations")).json()["data"]
                conversation_id = listed[0]["id"] if listed else None
            fake.script(text_turn("A new turn."))
            while True:  # the other process takes the turn over once the stalled one's heartbeat is stale
                newer = await chat(b, {"message": "are you there?", "thread_id": conversation_id})
                if newer.status not in (409, 503):  # 503: a statement waited on the frozen process's row lock
                    break
                assert time.monotonic() - stopped_at < 60, "the conversation stayed blocked"
                await asyncio.sleep(0.2)
            assert newer.status == 200 and newer.text == "A new turn."
            assert fake.disconnects == 0 and fake.completed == 1, "the first reply is still being streamed"
        finally:
            stalled.process.send_signal(signal.SIGCONT)
        seen = await asyncio.wait_for(original, 60)

        messages = (await b.get(f"/api/conversations/{conversation_id}")).json()["messages"]
        assert [m["status"] for m in messages] == ["complete", "interrupted", "complete", "complete"]
        interrupted = messages[1]
        assert seen.types[-2:] == ["error", "done"], seen.types[-5:]
        assert seen.of("error")[0]["code"] == "interrupted"
        assert seen.events[-1]["finish_reason"] == "interrupted"
        assert seen.frames[-1].done_sentinel
        assert seen.text != "".join(WORDS), "the client did not get the rest of a reply that nobody stored"
        assert seen.text.startswith(interrupted["content"])
        assert await fake.wait_until(lambda f: f.disconnects >= 1, within=10), "the upstream request was closed"

        replay = await rejoin(b, interrupted["id"])
        assert replay.types.count("done") == 1 and replay.types[-1] == "done"
        assert replay.text == interrupted["content"], "the stalled process wrote nothing more to the log"
        engine = create_async_engine(clean_db)
        async with engine.connect() as conn:
            runs = (
                await conn.execute(text("SELECT run_id FROM conversations WHERE id = :id"), {"id": conversation_id})
            ).scalar_one()
            spent = (
                (
                    await conn.execute(
                        text("SELECT outcome FROM usage_records WHERE message_id = :id"), {"id": interrupted["id"]}
                    )
                )
                .scalars()
                .all()
            )
        await engine.dispose()
        assert runs is None, "no turn holds the conversation"
        assert spent == ["cancelled"], "the lost turn's model call is in the ledger once"
