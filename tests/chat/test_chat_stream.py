"""POST /chatkit end to end: real uvicorn, the real Agents SDK and LiteLLM, a fake Gemini server, both databases."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from backend.db import create_database
from backend.models import Conversation, Instance, utcnow
from backend.settings import Settings
from tests.conftest import bearer, live
from tests.fakes.gemini import (
    FakeGemini,
    drop_turn,
    error_turn,
    function_call_turn,
    handoff_turn,
    mid_stream_error_turn,
    text_turn,
    truncated_turn,
)
from tests.sse import chat

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def client(gemini_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    async with live(gemini_settings()) as http:
        yield http


async def conversation(client: httpx.AsyncClient, conversation_id: str, **headers: str) -> dict[str, Any]:
    response = await client.get(f"/api/conversations/{conversation_id}", headers=headers or None)
    assert response.status_code == 200, response.text
    return response.json()


def assert_well_formed(stream: Any) -> None:
    assert stream.status == 200
    assert stream.types[0] == "start"
    assert stream.types[-1] == "done"
    assert stream.frames[-1].done_sentinel, "the stream must end with data: [DONE]"


# --- streaming behaviour -------------------------------------------------------------------------------------------


async def test_text_deltas_arrive_one_by_one_as_the_model_streams(client, fake):
    chunks = ["The ", "quick ", "brown ", "fox ", "jumps."]
    delay = 0.3
    fake.script(text_turn(chunks, delay=delay))

    stream = await chat(client, {"message": "Tell me something"})

    assert_well_formed(stream)
    assert [e["content"] for e in stream.of("text")] == chunks, "deltas must be relayed exactly, not re-chunked"
    arrivals = [f.at for f in stream.frames if f.type == "text"]
    # A buffered response would deliver every delta at once; streamed ones are spread over the fake's delays.
    assert arrivals[-1] - arrivals[0] >= 0.5 * delay * (len(chunks) - 1)
    assert len({round(at / (delay / 2)) for at in arrivals}) >= 3


async def test_stream_headers_stop_proxy_buffering(client, fake):
    fake.script(text_turn("hi"))
    async with client.stream("POST", "/chatkit", json={"message": "hello"}) as response:
        await response.aread()
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-accel-buffering"] == "no"
    assert "no-cache" in response.headers["cache-control"]


async def test_tool_turn_event_order_stored_rows_and_usage(client, fake):
    fake.script(
        handoff_turn(usage=(10, 2)),
        function_call_turn("add_task", {"title": "buy milk"}, usage=(20, 7)),
        text_turn(["Added ", "buy milk."], usage=(30, 4)),
    )

    stream = await chat(client, {"message": "add buy milk"})

    assert_well_formed(stream)
    assert stream.types == ["start", "agent", "agent", "tool_call", "tool_result", "text", "text", "done"]
    start, triage, agent, call, result = stream.events[:5]
    assert triage == {"type": "agent", "name": "Triage"}, "a new conversation starts with triage"
    assert agent == {"type": "agent", "name": "Task assistant"}
    assert call["name"] == "add_task" and call["args"] == {"title": "buy milk"}
    assert result["id"] == call["id"] and result["name"] == "add_task"
    assert result["result"]["task"]["title"] == "buy milk"
    done = stream.events[-1]
    assert done["finish_reason"] == "stop"
    assert done["usage"] == {"input_tokens": 60, "output_tokens": 13, "total_tokens": 73}
    assert done["conversation_id"] == start["conversation_id"]
    assert done["message_id"] == start["message_id"]
    assert start["title"] == "add buy milk"

    stored = await conversation(client, start["conversation_id"])
    user, assistant = stored["messages"]
    assert (user["role"], user["content"], user["seq"]) == ("user", "add buy milk", 1)
    assert assistant["id"] == start["message_id"]
    assert (assistant["role"], assistant["seq"], assistant["status"]) == ("assistant", 2, "complete")
    assert assistant["content"] == "Added buy milk."
    assert assistant["tool_calls"] == [
        {"id": call["id"], "name": "add_task", "args": {"title": "buy milk"}, "result": result["result"]}
    ]
    assert assistant["usage"] == done["usage"]
    tasks = (await client.get("/api/tasks")).json()["data"]
    assert [t["title"] for t in tasks] == ["buy milk"]


async def test_history_is_replayed_with_tool_calls_and_results(client, fake):
    fake.script(handoff_turn(), function_call_turn("add_task", {"title": "buy milk"}), text_turn("Added buy milk."))
    first = await chat(client, {"message": "add buy milk"})
    conversation_id = first.events[0]["conversation_id"]

    fake.script(function_call_turn("update_task", {"task": "buy milk", "title": "buy oat milk"}), text_turn("Renamed."))
    second = await chat(
        client, {"message": "rename the task you just added to buy oat milk", "thread_id": conversation_id}
    )

    assert_well_formed(second)
    assert second.of("tool_result")[0]["result"]["task"]["title"] == "buy oat milk"
    replayed = fake.requests[3]["contents"]
    parts = [part for content in replayed for part in content["parts"]]
    calls = [p["function_call"] for p in parts if "function_call" in p]
    responses = [p["function_response"] for p in parts if "function_response" in p]
    texts = [p["text"] for p in parts if "text" in p]
    assert [c["name"] for c in calls] == ["transfer_to_task_assistant", "add_task"], "the handoff is replayed too"
    assert calls[1]["args"] == {"title": "buy milk"}
    assert [r["name"] for r in responses] == ["transfer_to_task_assistant", "add_task"]
    assert "Task assistant" in str(responses[0]["response"])
    assert "buy milk" in str(responses[1]["response"])
    assert texts[0] == "add buy milk"
    assert "Added buy milk." in texts
    assert texts[-1] == "rename the task you just added to buy oat milk"
    tasks = (await client.get("/api/tasks")).json()["data"]
    assert [t["title"] for t in tasks] == ["buy oat milk"]


async def test_conversation_id_alias_and_updated_at_moves(client, fake):
    first = await chat(client, {"message": "hello"})
    conversation_id = first.events[0]["conversation_id"]
    before = (await conversation(client, conversation_id))["updated_at"]
    again = await chat(client, {"message": "again", "conversation_id": conversation_id})
    assert again.events[0]["conversation_id"] == conversation_id
    after = await conversation(client, conversation_id)
    assert after["updated_at"] > before
    assert [m["seq"] for m in after["messages"]] == [1, 2, 3, 4]


async def test_thinking_deltas_are_streamed(client, fake):
    fake.script(text_turn(["Answer."], thinking=["Considering the question."]))
    stream = await chat(client, {"message": "think first"})
    assert_well_formed(stream)
    assert [e["content"] for e in stream.of("thinking")] == ["Considering the question."]
    assert stream.types.index("thinking") < stream.types.index("text")


async def test_keep_alive_comments_while_the_model_is_silent(gemini_settings, fake):
    fake.script(text_turn("late", first_delay=1.5))
    async with live(gemini_settings(keepalive_seconds=0.3)) as client:
        stream = await chat(client, {"message": "slow"})
    assert_well_formed(stream)
    first_text = next(f.at for f in stream.frames if f.type == "text")
    pings = [f for f in stream.frames if f.comment is not None and f.at < first_text]
    assert len(pings) >= 2


async def test_every_frame_including_keep_alives_ends_with_a_blank_line(gemini_settings, fake):
    fake.script(text_turn(["a", "b"], first_delay=0.8, delay=0.5))
    async with (
        live(gemini_settings(keepalive_seconds=0.2)) as client,
        client.stream("POST", "/chatkit", json={"message": "raw"}) as response,
    ):
        raw = await response.aread()
    assert b"\r" not in raw
    frames = raw.decode().split("\n\n")
    assert frames[-1] == ""
    for f in frames[:-1]:  # a keep-alive comment, `data: [DONE]`, or one event: an `id:` line and one `data:` line
        lines = f.split("\n")
        assert (
            (f.startswith(":") and len(lines) == 1)
            or f == "data: [DONE]"
            or (len(lines) == 2 and lines[0].startswith("id: ") and lines[1].startswith("data: "))
        ), f
    ids = [int(f.split("\n")[0][4:]) for f in frames if f.startswith("id: ")]
    assert ids == list(range(1, len(ids) + 1)), "event ids are unique and increasing"
    assert sum(f.startswith(":") for f in frames) >= 2


async def test_long_first_message_titles_the_conversation_at_a_word_boundary(client, fake):
    message = "Please help me plan the garden party for next Saturday afternoon with friends"
    stream = await chat(client, {"message": message})
    title = stream.events[0]["title"]
    assert title.endswith("…")
    assert len(title) <= 51
    assert message.startswith(title[:-1])
    assert message[len(title) - 1] == " "


# --- persistence under failure --------------------------------------------------------------------------------------


async def test_disconnect_with_cancel_cancels_the_run_closes_upstream_and_keeps_the_partial_reply(
    gemini_settings, fake
):
    chunks = [f"word{i} " for i in range(12)]
    fake.script(text_turn(chunks, delay=0.3))

    async with live(gemini_settings(on_disconnect="cancel")) as client:
        await _disconnect_cancels(client, fake, chunks)


async def _disconnect_cancels(client: httpx.AsyncClient, fake: FakeGemini, chunks: list[str]) -> None:
    stream = await chat(client, {"message": "long story"}, stop_after_texts=2)
    seen = stream.text
    conversation_id = stream.events[0]["conversation_id"]

    assert await fake.wait_until(lambda f: f.disconnects == 1, within=5), "upstream stream must be closed"
    for _ in range(100):  # the reply is stored `in_progress` from the start; wait for its outcome
        messages = (await conversation(client, conversation_id))["messages"]
        if len(messages) == 2 and messages[1]["status"] != "in_progress":
            break
        await asyncio.sleep(0.05)
    assistant = messages[1]
    assert assistant["status"] == "cancelled"
    assert assistant["content"].startswith(seen)
    assert "".join(chunks).startswith(assistant["content"])
    assert fake.completed == 0

    fake.script(text_turn("Back again."))
    follow_up = await chat(client, {"message": "continue", "thread_id": conversation_id})
    assert follow_up.status == 200, "the run lock must be released after a disconnect"
    assert follow_up.text == "Back again."


async def test_rate_limit_before_first_token_is_retried(client, fake):
    fake.script(error_turn(429), text_turn("Recovered."))
    stream = await chat(client, {"message": "hi"})
    assert_well_formed(stream)
    assert "error" not in stream.types
    assert stream.text == "Recovered."
    assert len(fake.requests) == 2


@pytest.mark.parametrize(
    ("status", "code"), [(429, "rate_limited"), (500, "provider_unavailable"), (400, "provider_error")]
)
async def test_persistent_provider_error_ends_with_error_then_done(client, fake, status, code):
    fake.script(*[error_turn(status, message="upstream secret detail")] * 3)
    stream = await chat(client, {"message": "hi"})

    assert_well_formed(stream)
    assert stream.types == ["start", "agent", "error", "done"]
    error = stream.of("error")[0]
    assert error["code"] == code
    assert error["retryable"] is (status != 400)
    assert "secret" not in str(stream.events) and "Traceback" not in str(stream.events)
    assert stream.events[-1]["finish_reason"] == "error"
    stored = await conversation(client, stream.events[0]["conversation_id"])
    assert [m["status"] for m in stored["messages"]] == ["complete", "error"]
    assert stored["messages"][1]["error_code"] == code


async def test_mid_stream_error_keeps_the_partial_reply(client, fake):
    fake.script(mid_stream_error_turn(["Hel", "lo "], status=500, message="internal secret"))
    stream = await chat(client, {"message": "hi"})

    assert_well_formed(stream)
    assert stream.types == ["start", "agent", "text", "text", "error", "done"]
    assert stream.of("error")[0]["code"] == "provider_unavailable"
    assert "secret" not in str(stream.events)
    stored = await conversation(client, stream.events[0]["conversation_id"])
    assert stored["messages"][1]["status"] == "error"
    assert stored["messages"][1]["content"] == "Hello "


@pytest.mark.parametrize(
    "turn", [truncated_turn(["Par", "tial"]), drop_turn(["Par", "tial"])], ids=["truncated", "dropped"]
)
async def test_broken_upstream_stream_is_an_error_not_a_hang(client, fake, turn):
    fake.script(turn)
    stream = await asyncio.wait_for(chat(client, {"message": "hi"}), timeout=20)
    assert_well_formed(stream)
    assert stream.text == "Partial"
    assert stream.types[-2] == "error"
    assert stream.of("error")[0]["code"] == "provider_unavailable"
    stored = await conversation(client, stream.events[0]["conversation_id"])
    assert (stored["messages"][1]["status"], stored["messages"][1]["content"]) == ("error", "Partial")


async def test_a_silent_provider_times_out_as_unavailable(gemini_settings, fake):
    fake.default_turn = text_turn("too late", first_delay=5)
    async with live(gemini_settings(model_timeout_seconds=1, model_retries=0)) as client:
        stream = await chat(client, {"message": "hello?"})
    assert_well_formed(stream)
    assert stream.of("error")[0]["code"] == "provider_unavailable"
    assert stream.events[-1]["finish_reason"] == "error"


async def test_max_turns(gemini_settings, fake):
    fake.script(handoff_turn())
    fake.default_turn = function_call_turn("list_tasks", {})
    async with live(gemini_settings(max_turns=2)) as client:
        stream = await chat(client, {"message": "loop"})
    assert_well_formed(stream)
    assert stream.of("error")[0]["code"] == "max_turns"
    assert stream.events[-1]["finish_reason"] == "max_turns"


# --- validation and isolation ----------------------------------------------------------------------------------------


async def test_bad_requests_get_json_errors_before_any_stream(gemini_settings, fake):
    async with live(gemini_settings(max_message_chars=20)) as client:
        cases = [
            ({"message": ""}, 422, "validation_error"),
            ({"message": "   \n\t "}, 422, "validation_error"),
            ({"message": "x" * 21}, 422, "validation_error"),
            ({}, 422, "validation_error"),
            ('{"message": ', 400, "malformed_json"),
            ({"message": "hi", "thread_id": "not-a-uuid"}, 404, "not_found"),
            ({"message": "hi", "thread_id": "8d6f1f0e-8f4a-4a51-9d1e-0d8a4a0b9f11"}, 404, "not_found"),
        ]
        for body, status, code in cases:
            stream = await chat(client, body)
            assert (stream.status, stream.body["error"]["code"]) == (status, code), body
            assert "message" in stream.body["error"]
        assert (await client.get("/api/conversations")).json()["data"] == []
    assert fake.requests == []


async def test_second_message_while_a_run_is_in_progress_is_409(client, fake):
    fake.script(text_turn([f"w{i} " for i in range(10)], delay=0.2))
    first = asyncio.create_task(chat(client, {"message": "slow one"}))
    while not fake.requests:
        await asyncio.sleep(0.02)
    conversation_id = (await client.get("/api/conversations")).json()["data"][0]["id"]

    second = await chat(client, {"message": "too soon", "thread_id": conversation_id})

    assert second.status == 409
    assert second.body["error"]["code"] == "run_in_progress"
    finished = await first
    assert finished.events[-1]["finish_reason"] == "stop"
    messages = (await conversation(client, conversation_id))["messages"]
    assert [m["content"] for m in messages if m["role"] == "user"] == ["slow one"]


async def test_the_run_lock_holds_across_separate_server_instances(gemini_settings, fake):
    fake.script(text_turn([f"w{i} " for i in range(8)], delay=0.2))
    async with live(gemini_settings()) as worker_a, live(gemini_settings()) as worker_b:
        first = asyncio.create_task(chat(worker_a, {"message": "slow one"}))
        while not fake.requests:
            await asyncio.sleep(0.02)
        conversation_id = (await worker_b.get("/api/conversations")).json()["data"][0]["id"]
        second = await chat(worker_b, {"message": "from another worker", "thread_id": conversation_id})
        assert (second.status, second.body["error"]["code"]) == (409, "run_in_progress")
        assert (await first).events[-1]["finish_reason"] == "stop"
        third = await chat(worker_b, {"message": "now it is free", "thread_id": conversation_id})
        assert third.status == 200 and third.events[-1]["finish_reason"] == "stop"


async def test_a_lock_held_by_a_live_process_blocks_and_one_whose_process_stopped_is_taken_over(
    client, fake, gemini_settings
):
    first = await chat(client, {"message": "hello"})
    conversation_id = uuid.UUID(first.events[0]["conversation_id"])
    database = create_database(gemini_settings())
    other_process = uuid.uuid4()
    async with database.sessions() as session:
        session.add(Instance(id=other_process, heartbeat_at=utcnow()))
        await session.exec(  # type: ignore[call-overload]
            update(Conversation)
            .where(Conversation.id == conversation_id)
            .values(run_id=uuid.uuid4(), run_owner=other_process, run_expires_at=utcnow() + timedelta(seconds=600))
        )
        await session.commit()
    blocked = await chat(client, {"message": "locked?", "thread_id": str(conversation_id)})
    assert (blocked.status, blocked.body["error"]["code"]) == (409, "run_in_progress")

    async with database.sessions() as session:  # the other process stops beating
        await session.exec(  # type: ignore[call-overload]
            update(Instance).where(Instance.id == other_process).values(heartbeat_at=utcnow() - timedelta(minutes=1))
        )
        await session.commit()
    await database.dispose()
    after_takeover = await chat(client, {"message": "taken over", "thread_id": str(conversation_id)})
    assert after_takeover.status == 200
    assert after_takeover.events[-1]["finish_reason"] == "stop"


async def test_another_users_thread_is_404_like_a_missing_one(gemini_settings, fake):
    from tests.conftest import SECRET

    async with live(gemini_settings(auth_secret=SECRET)) as client:
        alice = await chat(client, {"message": "alice's secret plan"}, headers=bearer("alice"))
        assert_well_formed(alice)
        conversation_id = alice.events[0]["conversation_id"]

        bob = await chat(client, {"message": "let me in", "thread_id": conversation_id}, headers=bearer("bob"))
        missing = await chat(
            client,
            {"message": "let me in", "thread_id": "8d6f1f0e-8f4a-4a51-9d1e-0d8a4a0b9f11"},
            headers=bearer("bob"),
        )
        anonymous = await chat(client, {"message": "hi"})

        assert bob.status == 404 and bob.error_body == missing.error_body
        assert anonymous.status == 401 and anonymous.body["error"]["code"] == "unauthorized"
        stored = await conversation(client, conversation_id, **bearer("alice"))
        assert [m["content"] for m in stored["messages"] if m["role"] == "user"] == ["alice's secret plan"]
        assert (await client.get("/api/conversations", headers=bearer("bob"))).json()["data"] == []


async def test_tools_act_only_for_the_caller_whatever_the_model_asks(gemini_settings, fake):
    from tests.conftest import SECRET

    async with live(gemini_settings(auth_secret=SECRET)) as client:
        created = await client.post("/api/tasks", json={"title": "alice's task"}, headers=bearer("alice"))
        task_id = created.json()["id"]
        fake.script(
            handoff_turn(),
            function_call_turn("complete_task", {"task": task_id}),
            text_turn("Tried."),
            handoff_turn(),
            function_call_turn("delete_task", {"task": "alice's task"}),
            text_turn("Tried again."),
        )
        by_id = await chat(client, {"message": "complete alice's task"}, headers=bearer("mallory"))
        # The target is resolved before approval is asked: another user's task is never found, so nothing waits.
        by_title = await chat(client, {"message": "delete it"}, headers=bearer("mallory"))

        assert by_title.of("done")[0]["finish_reason"] == "stop" and not by_title.of("approval_request")
        assert by_id.of("tool_result")[0]["result"] == {"error": "Task not found."}
        assert by_title.of("tool_result")[0]["result"] == {"error": 'No task matches "alice\'s task".'}
        task = (await client.get(f"/api/tasks/{task_id}", headers=bearer("alice"))).json()
        assert (task["title"], task["completed"]) == ("alice's task", False)


async def test_invalid_tool_arguments_come_back_to_the_model_as_an_error(client, fake):
    fake.script(
        handoff_turn(), function_call_turn("add_task", {"title": "x" * 300}), text_turn("That title is too long.")
    )
    stream = await chat(client, {"message": "add a very long task"})
    result = stream.of("tool_result")[0]["result"]
    assert result["error"].startswith("title: ")
    assert "at most 200" in result["error"]
    assert (await client.get("/api/tasks")).json()["data"] == []
    second_request_parts = [p for c in fake.requests[2]["contents"] for p in c["parts"]]
    assert any("function_response" in p and "title" in str(p) for p in second_request_parts)


# --- the offline model ------------------------------------------------------------------------------------------------


async def test_offline_model_drives_the_real_tools(make_settings):
    async with live(make_settings(offline_model=True)) as client:
        added = await chat(client, {"message": "add buy milk"})
        assert_well_formed(added)
        assert added.types[:5] == ["start", "agent", "agent", "tool_call", "tool_result"]
        assert [e["name"] for e in added.of("agent")] == ["Triage", "Task assistant"], "triage hands off"
        assert added.of("tool_call")[0]["args"] == {"title": "buy milk"}
        assert added.text.startswith("(offline demo)")
        assert len(added.of("text")) > 3, "the offline model streams word by word"

        thread = {"thread_id": added.events[0]["conversation_id"]}
        listed = await chat(client, {"message": "list my tasks", **thread})
        assert "buy milk" in listed.text
        completed = await chat(client, {"message": "complete buy milk", **thread})
        assert completed.of("tool_result")[0]["result"]["task"]["completed"] is True
        hello = await chat(client, {"message": "hello there", **thread})
        assert "GEMINI_API_KEY" in hello.text and hello.types.count("tool_call") == 0
        tasks = (await client.get("/api/tasks")).json()["data"]
        assert [(t["title"], t["completed"]) for t in tasks] == [("buy milk", True)]


# --- server shutdown ----------------------------------------------------------------------------------------------


@pytest.mark.timeout(240)
async def test_sigterm_ends_open_streams_cleanly_and_saves_them(tmp_path, fake):
    import signal
    import sqlite3

    from tests.servers import server_env, server_process

    db_path = tmp_path / "shutdown.db"
    env = server_env(f"sqlite+aiosqlite:///{db_path}", fake.base_url, MIGRATE_ON_STARTUP="true")
    fake.script(text_turn([f"w{i} " for i in range(40)], delay=0.25))
    async with server_process(env) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            lines: list[str] = []
            async with client.stream("POST", "/chatkit", json={"message": "go"}) as response:
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        lines.append(line)
                    if sum('"type":"text"' in item for item in lines) == 3 and server.process.poll() is None:
                        server.process.send_signal(signal.SIGTERM)
        assert lines[-1] == "data: [DONE]"
        assert '"code":"server_shutdown"' in lines[-3]
        assert '"finish_reason":"cancelled"' in lines[-2]
        assert server.process.wait(timeout=30) is not None
    with sqlite3.connect(db_path) as db:
        rows = db.execute("SELECT role, status, content FROM messages ORDER BY seq").fetchall()
        locks = db.execute("SELECT run_id FROM conversations").fetchall()
    assert rows[0] == ("user", "complete", "go")
    assert rows[1][:2] == ("assistant", "cancelled") and rows[1][2].startswith("w0 w1 w2 ")
    assert locks == [(None,)]
