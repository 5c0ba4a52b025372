"""AG-UI 1.0 (`POST /api/agui`): the mapping, frontend tools, interrupts, rejoin, bad input. Real uvicorn, fake Gemini.

Every event is validated against the `ag-ui-protocol` package's own pydantic models, and every response against
AG-UI's ordering rules (`checked`). The real `@ag-ui/client` drives the same endpoint in `tests/js/agui/`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from ag_ui.core import Event, RunAgentInput, Tool, ToolMessage, UserMessage
from pydantic import TypeAdapter

from backend.settings import Settings
from tests.conftest import SECRET, bearer, live
from tests.fakes.gemini import FakeGemini, error_turn, function_call_turn, handoff_turn, text_turn
from tests.protocols.test_aisdk import PNG
from tests.sse import Stream, read_stream

pytestmark = pytest.mark.timeout(90)
EVENT = TypeAdapter(Event)
PATH = "/api/agui"
BANNER = Tool(
    name="show_banner",
    description="Show a banner in the page.",
    parameters={"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
)


@pytest.fixture
async def client(gemini_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    async with live(gemini_settings()) as http:
        yield http


def user(text: str) -> UserMessage:
    return UserMessage(id=uuid.uuid4().hex, content=text)


def run_input(thread_id: str, *messages: Any, **fields: Any) -> dict[str, Any]:
    """A `RunAgentInput` built with AG-UI's own model, as a client sends it (camelCase JSON)."""
    made = RunAgentInput(
        thread_id=thread_id,
        run_id=fields.pop("run_id", uuid.uuid4().hex),
        messages=list(messages),
        tools=fields.pop("tools", []),
        context=[],
        state=None,
        forwarded_props=fields.pop("forwarded_props", None),
        **fields,
    )
    return made.model_dump(mode="json", by_alias=True, exclude_none=True)


def new_thread() -> str:
    return f"thread-{uuid.uuid4().hex[:12]}"


async def post(client: httpx.AsyncClient, payload: dict[str, Any] | str, **headers: str) -> Stream:
    if isinstance(payload, str):
        return await read_stream(
            client, "POST", PATH, headers={**headers, "Content-Type": "application/json"}, content=payload
        )
    return await read_stream(client, "POST", PATH, headers=headers, json=payload)


def checked(stream: Stream) -> Stream:
    """A valid AG-UI response: every event a valid AG-UI event with our `id:`, and AG-UI's ordering rules kept."""
    assert stream.status == 200, stream.body
    assert stream.headers["content-type"].startswith("text/event-stream")
    for frame in stream.frames:
        if frame.data is not None:
            EVENT.validate_python(frame.data)
            assert frame.id is not None, "every event carries our event id"
    assert not any(f.done_sentinel for f in stream.frames), "AG-UI has no [DONE]"
    assert_ordered(stream.events)
    return stream


def assert_ordered(events: list[dict[str, Any]]) -> None:
    """AG-UI's rules (as `@ag-ui/client`'s `verifyEvents` checks them): start before content before end, steps
    closed, one RUN_STARTED first and exactly one RUN_FINISHED or RUN_ERROR, last."""
    types = [e["type"] for e in events]
    assert types and types[0] == "RUN_STARTED", types
    assert types.count("RUN_STARTED") == 1
    terminal = [t for t in types if t in ("RUN_FINISHED", "RUN_ERROR")]
    assert len(terminal) == 1 and types[-1] == terminal[0], types
    open_: dict[str, set[str]] = {"text": set(), "reasoning": set(), "span": set(), "tool": set(), "step": set()}
    opens = {
        "TEXT_MESSAGE_START": ("text", "messageId"),
        "REASONING_MESSAGE_START": ("reasoning", "messageId"),
        "REASONING_START": ("span", "messageId"),
        "TOOL_CALL_START": ("tool", "toolCallId"),
        "STEP_STARTED": ("step", "stepName"),
    }
    inside = {
        "TEXT_MESSAGE_CONTENT": ("text", "messageId"),
        "REASONING_MESSAGE_CONTENT": ("reasoning", "messageId"),
        "TOOL_CALL_ARGS": ("tool", "toolCallId"),
    }
    closes = {
        "TEXT_MESSAGE_END": ("text", "messageId"),
        "REASONING_MESSAGE_END": ("reasoning", "messageId"),
        "REASONING_END": ("span", "messageId"),
        "TOOL_CALL_END": ("tool", "toolCallId"),
        "STEP_FINISHED": ("step", "stepName"),
    }
    started_calls: set[str] = set()
    ended_calls: set[str] = set()
    for event in events:
        kind = event["type"]
        if kind in opens:
            group, key = opens[kind]
            assert event[key] not in open_[group], event
            open_[group].add(event[key])
            if kind == "TOOL_CALL_START":
                started_calls.add(event[key])
        elif kind in inside:
            group, key = inside[kind]
            assert event[key] in open_[group], event
        elif kind in closes:
            group, key = closes[kind]
            assert event[key] in open_[group], event
            open_[group].discard(event[key])
            if kind == "TOOL_CALL_END":
                ended_calls.add(event[key])
        elif kind == "TOOL_CALL_RESULT":
            # A result ends its call's events (a call of an earlier run, resumed here, is ended already).
            assert event["toolCallId"] in ended_calls or event["toolCallId"] not in started_calls, event
        elif kind == "RUN_FINISHED":
            assert not any(open_.values()), open_
    assert not any(open_.values()) or types[-1] == "RUN_ERROR", open_


def text_of(stream: Stream) -> str:
    return "".join(e["delta"] for e in stream.of("TEXT_MESSAGE_CONTENT"))


def finished(stream: Stream) -> dict[str, Any]:
    assert stream.types[-1] == "RUN_FINISHED", stream.types
    return stream.events[-1]


def error_of(stream: Stream) -> tuple[int, str]:
    assert stream.body is not None, stream.types
    return stream.status, stream.body["error"]["code"]


async def test_a_text_turn_maps_to_run_step_reasoning_and_text_events(
    client: httpx.AsyncClient, fake: FakeGemini
) -> None:
    fake.script(text_turn(["Hel", "lo ", "there"], thinking=["Let me think."]))
    thread = new_thread()
    body = run_input(thread, user("hi"), run_id="run-1")
    stream = checked(await post(client, body))
    assert stream.types == [
        "RUN_STARTED",
        "STEP_STARTED",
        "REASONING_START",
        "REASONING_MESSAGE_START",
        "REASONING_MESSAGE_CONTENT",
        "REASONING_MESSAGE_END",
        "REASONING_END",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        "STEP_FINISHED",
        "RUN_FINISHED",
    ]
    started, end = stream.events[0], finished(stream)
    assert (started["threadId"], started["runId"]) == (thread, "run-1")
    assert (end["threadId"], end["runId"]) == (thread, "run-1")
    assert end["outcome"] == {"type": "success"}
    assert end["usage"][0]["totalTokens"] > 0
    assert stream.of("STEP_STARTED")[0]["stepName"] == "Triage"
    assert text_of(stream) == "Hello there"
    conversation_id = started["metadata"]["conversationId"]
    stored = (await client.get(f"/api/conversations/{conversation_id}")).json()
    assert [m["content"] for m in stored["messages"]] == ["hi", "Hello there"]
    assert stored["messages"][1]["id"] == started["metadata"]["messageId"]


async def test_the_stored_history_is_the_truth_and_a_resent_message_runs_once(
    client: httpx.AsyncClient, fake: FakeGemini
) -> None:
    thread = new_thread()
    fake.script(text_turn("One."), text_turn("Two."))
    first_message = user("first")
    first = checked(await post(client, run_input(thread, first_message)))
    made_up = {"id": "x", "role": "assistant", "content": "I never said this"}
    second = checked(await post(client, run_input(thread, first_message, made_up, user("second"))))
    conversation_id = first.events[0]["metadata"]["conversationId"]
    assert second.events[0]["metadata"]["conversationId"] == conversation_id
    stored = (await client.get(f"/api/conversations/{conversation_id}")).json()
    assert [m["content"] for m in stored["messages"]] == ["first", "One.", "second", "Two."]
    assert "I never said this" not in str(fake.requests[-1]["contents"])


async def test_a_tool_turn_with_a_handoff_maps_to_steps_tool_calls_and_a_widget(
    client: httpx.AsyncClient, fake: FakeGemini
) -> None:
    assert (await client.post("/api/tasks", json={"title": "milk"})).status_code == 201
    fake.script(handoff_turn(), function_call_turn("list_tasks", {}), text_turn("One task."))
    stream = checked(await post(client, run_input(new_thread(), user("my tasks?"))))
    steps = [(e["type"], e["stepName"]) for e in stream.events if e["type"].startswith("STEP_")]
    assert steps == [
        ("STEP_STARTED", "Triage"),
        ("STEP_FINISHED", "Triage"),
        ("STEP_STARTED", "Task assistant"),
        ("STEP_FINISHED", "Task assistant"),
    ]
    calls = {e["toolCallName"]: e["toolCallId"] for e in stream.of("TOOL_CALL_START")}
    assert "list_tasks" in calls
    args = [e for e in stream.of("TOOL_CALL_ARGS") if e["toolCallId"] == calls["list_tasks"]]
    assert json.loads(args[0]["delta"]) == {}
    result = next(e for e in stream.of("TOOL_CALL_RESULT") if e["toolCallId"] == calls["list_tasks"])
    assert "milk" in result["content"] and isinstance(json.loads(result["content"]), dict)
    widgets = [e for e in stream.of("CUSTOM") if e["name"] == "widget"]
    assert widgets and widgets[0]["value"]["widget"]["type"]
    assert text_of(stream) == "One task."
    assert finished(stream)["outcome"] == {"type": "success"}


async def test_a_frontend_tool_call_ends_the_run_and_its_tool_message_continues_it(
    client: httpx.AsyncClient, fake: FakeGemini
) -> None:
    thread = new_thread()
    question = user("greet me in a banner")
    fake.script(function_call_turn("show_banner", {"text": "Hi!"}))
    paused = checked(await post(client, run_input(thread, question, tools=[BANNER])))
    declared = [d["name"] for t in fake.requests[-1].get("tools", []) for d in t.get("function_declarations", [])]
    assert "show_banner" in declared, "the frontend tool is offered to the model for this run"
    start = paused.of("TOOL_CALL_START")[0]
    call_id = start["toolCallId"]
    assert start["toolCallName"] == "show_banner"
    assert json.loads(paused.of("TOOL_CALL_ARGS")[0]["delta"]) == {"text": "Hi!"}
    assert not paused.of("TOOL_CALL_RESULT"), "the browser runs it"
    outcome = finished(paused)["outcome"]
    assert outcome == {"type": "success", "pendingToolCallIds": [call_id]}, "AG-UI: a frontend tool call ends the run"

    # The client answers as AG-UI clients do: the tool message after the assistant's call, in the next run.
    assistant = {
        "id": start.get("parentMessageId", call_id),
        "role": "assistant",
        "toolCalls": [{"id": call_id, "type": "function", "function": {"name": "show_banner", "arguments": "{}"}}],
    }
    result = ToolMessage(id="t1", tool_call_id=call_id, content=json.dumps({"shown": True}))
    fake.script(text_turn("Banner shown."))
    resumed = checked(await post(client, run_input(thread, question, assistant, result, tools=[BANNER])))
    assert resumed.events[0]["metadata"]["messageId"] == paused.events[0]["metadata"]["messageId"], "the same reply"
    assert text_of(resumed) == "Banner shown."
    assert finished(resumed)["outcome"] == {"type": "success"}
    sent_back = str(fake.requests[-1]["contents"])
    assert "shown" in sent_back, "the model got the browser's result"


async def test_a_frontend_tool_result_also_comes_through_resume(client: httpx.AsyncClient, fake: FakeGemini) -> None:
    thread = new_thread()
    fake.script(function_call_turn("show_banner", {"text": "Hi!"}), text_turn("Done."))
    paused = checked(await post(client, run_input(thread, user("banner"), tools=[BANNER])))
    (call_id,) = finished(paused)["outcome"]["pendingToolCallIds"]
    answer = [{"interruptId": call_id, "status": "resolved", "payload": {"shown": "yes"}}]
    resumed = checked(await post(client, run_input(thread, tools=[BANNER], resume=answer)))
    assert text_of(resumed) == "Done."
    assert "yes" in str(fake.requests[-1]["contents"])


async def test_an_approval_is_an_interrupt_answered_through_resume(client: httpx.AsyncClient, fake: FakeGemini) -> None:
    for title in ("milk", "bread"):
        assert (await client.post("/api/tasks", json={"title": title})).status_code == 201
    thread = new_thread()
    fake.script(handoff_turn(), function_call_turn("delete_task", {"task": "milk"}))
    paused = checked(await post(client, run_input(thread, user("delete milk"))))
    call = next(e for e in paused.of("TOOL_CALL_START") if e["toolCallName"] == "delete_task")
    (interrupt,) = finished(paused)["outcome"]["interrupts"]
    assert interrupt["id"] == interrupt["toolCallId"] == call["toolCallId"]
    assert interrupt["reason"] == "tool_approval"
    assert interrupt["responseSchema"]["properties"]["approved"] == {"type": "boolean"}
    approve = [{"interruptId": interrupt["id"], "status": "resolved", "payload": {"approved": True}}]
    fake.script(text_turn("Deleted."))
    resumed = checked(await post(client, run_input(thread, resume=approve)))
    assert [e["toolCallId"] for e in resumed.of("TOOL_CALL_RESULT")] == [call["toolCallId"]]
    assert text_of(resumed) == "Deleted."
    assert [t["title"] for t in (await client.get("/api/tasks")).json()["data"]] == ["bread"]

    fake.script(function_call_turn("delete_task", {"task": "bread"}))
    again = checked(await post(client, run_input(thread, user("delete bread"))))
    (second,) = finished(again)["outcome"]["interrupts"]
    refuse = [{"interruptId": second["id"], "status": "cancelled"}]
    fake.script(text_turn("Kept it."))
    refused = checked(await post(client, run_input(thread, resume=refuse)))
    assert json.loads(refused.of("TOOL_CALL_RESULT")[0]["content"])["rejected"] is True
    assert [t["title"] for t in (await client.get("/api/tasks")).json()["data"]] == ["bread"]


async def test_a_provider_failure_ends_with_run_error_and_our_safe_message(
    client: httpx.AsyncClient, fake: FakeGemini
) -> None:
    fake.script(*[error_turn(429, "quota for project secret-123 exhausted")] * 3)  # retried twice
    stream = checked(await post(client, run_input(new_thread(), user("hi"))))
    error = stream.events[-1]
    assert error["type"] == "RUN_ERROR" and error["code"] == "rate_limited"
    assert "secret-123" not in json.dumps(stream.events)
    assert "RUN_FINISHED" not in stream.types


async def test_bad_input_gets_typed_errors_before_any_stream(client: httpx.AsyncClient, fake: FakeGemini) -> None:
    thread = new_thread()
    bad_tool = {**run_input(thread, user("hi")), "tools": [{"name": "9 bad name", "description": "x"}]}
    cases: list[tuple[dict[str, Any] | str, int, str]] = [
        ("{not json", 400, "malformed_json"),
        ({"runId": "r", "messages": []}, 422, "validation_error"),
        ({"threadId": thread, "runId": "r", "messages": "hi"}, 422, "validation_error"),
        ({"threadId": thread, "runId": "r", "messages": [{"id": "m", "role": "robot"}]}, 422, "validation_error"),
        (run_input(thread), 422, "validation_error"),
        (run_input(thread, {"id": "a", "role": "assistant", "content": "hi"}), 422, "validation_error"),
        (run_input(thread, user("   ")), 422, "validation_error"),
        (bad_tool, 422, "validation_error"),
        (run_input(thread, user("hi"), tools=[Tool(name="delete_task", description="clash")]), 422, "validation_error"),
        (run_input(thread, user("hi"), tools=[BANNER, BANNER]), 422, "validation_error"),
        ({**run_input(thread, user("hi")), "forwardedProps": {"action": {"kind": 1}}}, 422, "validation_error"),
        (
            run_input(
                thread,
                UserMessage(id="m", content=[{"type": "image", "source": {"type": "url", "value": "https://x/y.png"}}]),
            ),
            422,
            "validation_error",
        ),
        (run_input(thread, resume=[{"interruptId": "x", "status": "resolved", "payload": True}]), 404, "not_found"),
        # a tool result nested too deep to decode is text (not a 500); nothing waits for it in a new thread
        (run_input(thread, ToolMessage(id="t", tool_call_id="c", content="[" * 100_000)), 404, "not_found"),
    ]
    for payload, status, code in cases:
        got = error_of(await post(client, payload))
        assert got == (status, code), (payload, got)
    assert (await client.get(f"{PATH}/{thread}/stream")).status_code == 204, "nothing was started"
    assert not fake.requests, "no bad request reached the model"


async def test_image_parts_become_attachments(client: httpx.AsyncClient, fake: FakeGemini) -> None:
    fake.script(text_turn("A pixel."))
    image = {
        "type": "image",
        "source": {"type": "data", "value": base64.b64encode(PNG).decode(), "mimeType": "image/png"},
    }
    message = UserMessage(id="m1", content=[{"type": "text", "text": "what is it?"}, image])
    stream = checked(await post(client, run_input(new_thread(), message)))
    conversation_id = stream.events[0]["metadata"]["conversationId"]
    stored = (await client.get(f"/api/conversations/{conversation_id}")).json()["messages"][0]
    assert [a["content_type"] for a in stored["attachments"]] == ["image/png"]


async def test_another_users_thread_is_404_and_rejoin_follows_a_running_reply(
    gemini_settings: Callable[..., Settings], fake: FakeGemini
) -> None:
    async with live(gemini_settings(auth_secret=SECRET)) as http:
        alice, bob = bearer("alice"), bearer("bob")
        thread = str(uuid.uuid4())
        fake.script(text_turn([f"w{i} " for i in range(60)], delay=0.05))
        first = await read_stream(
            http, "POST", PATH, headers=alice, json=run_input(thread, user("go")), stop_after_texts=1
        )
        assert first.status == 200
        assert error_of(await post(http, run_input(thread, user("mine?")), **bob)) == (404, "not_found")
        assert (await http.get(f"{PATH}/{thread}/stream", headers=bob)).status_code == 404
        replay = await read_stream(
            http, "GET", f"{PATH}/{thread}/stream?runId=again", headers=alice, stop_after_texts=2
        )
        assert replay.events[0]["type"] == "RUN_STARTED" and replay.events[0]["runId"] == "again"
        assert replay.events[0]["metadata"]["messageId"] == first.events[0]["metadata"]["messageId"]
        tail = asyncio.create_task(
            read_stream(http, "GET", f"{PATH}/{thread}/stream", headers={**alice, "Last-Event-ID": str(replay.last_id)})
        )
        await asyncio.sleep(0.2)
        stop = await http.post(f"/api/conversations/{thread}/stop", headers=alice)
        assert stop.status_code == 200, stop.text
        rest = checked(await tail)
        assert finished(rest)["outcome"] == {"type": "cancelled"}
        assert rest.events[0]["type"] == "RUN_STARTED", "a rejoin after Last-Event-ID still opens the run"
        assert (await http.get(f"{PATH}/{thread}/stream", headers=alice)).status_code == 204


async def test_a_widget_action_comes_in_forwarded_props(client: httpx.AsyncClient, fake: FakeGemini) -> None:
    created = (await client.post("/api/tasks", json={"title": "bread"})).json()
    thread = new_thread()
    fake.script(handoff_turn(), function_call_turn("list_tasks", {}), text_turn("Here."))
    listed = checked(await post(client, run_input(thread, user("list"))))
    widget = next(e for e in listed.of("CUSTOM") if e["name"] == "widget")
    action = {"type": "tasks.toggle", "payload": {"task_id": created["id"], "completed": True}}
    acted = checked(await post(client, run_input(thread, forwarded_props={"action": action})))
    assert [e["value"]["id"] for e in acted.of("CUSTOM")] == [widget["value"]["id"]]
    assert (await client.get(f"/api/tasks/{created['id']}")).json()["completed"] is True
