"""Widgets, tool approvals and client tools over the SSE protocol: real uvicorn, SDK and LiteLLM, fake Gemini."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from agents import Agent, RunContextWrapper, function_tool

from backend.app import create_app
from backend.chat.context import ChatContext
from backend.chat.model import build_model
from backend.settings import Settings
from tests.conftest import SECRET, bearer, live, serve
from tests.fakes.gemini import FakeGemini, function_call_turn, handoff_turn, text_turn
from tests.sse import Stream, chat, rejoin

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def client(gemini_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    async with live(gemini_settings()) as http:
        yield http


def well_formed(stream: Stream) -> Stream:
    assert stream.status == 200, stream.body
    assert stream.types[0] == "start" and stream.types[-1] == "done"
    assert stream.frames[-1].done_sentinel
    return stream


async def detail(client: httpx.AsyncClient, conversation_id: str, **headers: str) -> dict[str, Any]:
    response = await client.get(f"/api/conversations/{conversation_id}", headers=headers or None)
    assert response.status_code == 200, response.text
    return response.json()


def function_responses(request: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        part["function_response"]
        for content in request["contents"]
        for part in content["parts"]
        if "function_response" in part
    ]


async def paused_delete(client: httpx.AsyncClient, fake: FakeGemini, **headers: str) -> tuple[Stream, dict[str, Any]]:
    created = await client.post("/api/tasks", json={"title": "milk"}, headers=headers or None)
    assert created.status_code == 201
    fake.script(handoff_turn(), function_call_turn("delete_task", {"task": "milk"}))  # triage hands off first
    paused = well_formed(await chat(client, {"message": "delete milk"}, headers=headers or None))
    return paused, paused.of("approval_request")[0]


# --- approvals -----------------------------------------------------------------------------------------------------


async def test_an_approved_tool_runs_after_the_pause_and_the_reply_continues(client, fake):
    paused, approval = await paused_delete(client, fake)
    assert paused.types[-3:] == ["tool_call", "approval_request", "done"]
    assert (approval["name"], approval["args"]) == ("delete_task", {"task": "milk"})
    assert paused.events[-1]["finish_reason"] == "approval_required"
    conversation_id = paused.events[0]["conversation_id"]
    waiting = await detail(client, conversation_id)
    assert waiting["active_message_id"] is None, "the run lock is released while the approval waits"
    assert waiting["messages"][1]["status"] == "requires_action"

    fake.script(text_turn("Deleted milk."))
    resumed = well_formed(
        await chat(client, {"thread_id": conversation_id, "approvals": [{"id": approval["id"], "approve": True}]})
    )
    assert resumed.events[0]["message_id"] == paused.events[0]["message_id"]
    assert resumed.frames[0].id == paused.last_id + 1, "a continuation's event ids follow the paused segment's"
    assert resumed.of("tool_result")[0]["result"]["deleted"]["title"] == "milk"
    assert resumed.of("tool_result")[0]["name"] == "delete_task", "a resumed run's results still name their tool"
    assert resumed.text == "Deleted milk." and resumed.events[-1]["finish_reason"] == "stop"
    assert (await client.get("/api/tasks")).json()["data"] == []
    assert function_responses(fake.requests[-1])[-1]["name"] == "delete_task"

    message = (await detail(client, conversation_id))["messages"][1]
    assert message["status"] == "complete"
    assert [p["type"] for p in message["parts"]] == ["agent", "agent", "tool_call", "approval", "text"]
    assert message["parts"][3]["decision"] == "approved"
    replay = well_formed(await rejoin(client, message["id"]))
    assert replay.types.count("done") == 2, "the replay holds both segments of the turn"
    assert replay.events[-1]["finish_reason"] == "stop"


async def test_a_rejected_tool_never_runs_and_the_model_hears_why(client, fake):
    paused, approval = await paused_delete(client, fake)
    conversation_id = paused.events[0]["conversation_id"]
    fake.script(text_turn("Okay, I kept it."))
    resumed = well_formed(
        await chat(
            client,
            {
                "thread_id": conversation_id,
                "approvals": [{"id": approval["id"], "approve": False, "reason": "I still need it"}],
            },
        )
    )
    assert resumed.of("tool_result")[0]["result"] == {"error": "I still need it", "rejected": True}
    assert [t["title"] for t in (await client.get("/api/tasks")).json()["data"]] == ["milk"]
    assert "I still need it" in str(function_responses(fake.requests[-1])[-1])
    message = (await detail(client, conversation_id))["messages"][1]
    approval_part = next(p for p in message["parts"] if p["type"] == "approval")
    assert (approval_part["decision"], approval_part["reason"]) == ("rejected", "I still need it")


async def test_answers_are_checked_before_anything_resumes(client, fake):
    paused, approval = await paused_delete(client, fake)
    conversation_id = paused.events[0]["conversation_id"]
    unknown = await chat(client, {"thread_id": conversation_id, "approvals": [{"id": "call_nope", "approve": True}]})
    assert (unknown.status, unknown.body["error"]["code"]) == (409, "not_pending")
    not_bool = await chat(client, {"thread_id": conversation_id, "approvals": [{"id": approval["id"], "approve": 1}]})
    assert not_bool.status == 422
    no_thread = await chat(client, {"approvals": [{"id": approval["id"], "approve": True}]})
    assert no_thread.status == 422
    fake.script(text_turn("Done."))
    ok = await chat(client, {"thread_id": conversation_id, "approvals": [{"id": approval["id"], "approve": True}]})
    assert ok.status == 200
    again = await chat(client, {"thread_id": conversation_id, "approvals": [{"id": approval["id"], "approve": True}]})
    assert (again.status, again.body["error"]["code"]) == (409, "nothing_pending")


async def test_a_new_message_cancels_a_pending_approval(client, fake):
    paused, approval = await paused_delete(client, fake)
    conversation_id = paused.events[0]["conversation_id"]
    fake.script(text_turn("Sure."))
    well_formed(await chat(client, {"message": "never mind", "thread_id": conversation_id}))
    old = (await detail(client, conversation_id))["messages"][1]
    assert old["status"] == "cancelled"
    assert next(p for p in old["parts"] if p["type"] == "approval")["decision"] == "cancelled"
    late = await chat(client, {"thread_id": conversation_id, "approvals": [{"id": approval["id"], "approve": True}]})
    assert late.status == 409
    assert [t["title"] for t in (await client.get("/api/tasks")).json()["data"]] == ["milk"]


async def test_answers_for_another_users_conversation_are_404(make_settings, fake):
    settings = make_settings(auth_secret=SECRET, offline_model=False, gemini_api_key="k", gemini_api_base=fake.base_url)
    async with live(settings) as client:
        paused, approval = await paused_delete(client, fake, **bearer("alice"))
        conversation_id = paused.events[0]["conversation_id"]
        body = {"thread_id": conversation_id, "approvals": [{"id": approval["id"], "approve": True}]}
        stolen = await chat(client, body, headers=bearer("mallory"))
        action = await chat(
            client,
            {"thread_id": conversation_id, "action": {"type": "tasks.toggle", "payload": {}}},
            headers=bearer("mallory"),
        )
    assert (stolen.status, stolen.body["error"]["code"]) == (404, "not_found")
    assert action.status == 404


# --- client tools --------------------------------------------------------------------------------------------------


async def test_a_client_tool_pauses_for_the_browser_and_its_result_reaches_the_model(client, fake):
    fake.script(handoff_turn(), function_call_turn("set_theme", {"theme": "dark"}))
    paused = well_formed(await chat(client, {"message": "dark mode please"}))
    assert "tool_call" not in paused.types, "a client tool is announced as client_tool_call only"
    call = paused.of("client_tool_call")[0]
    assert (call["name"], call["args"]) == ("set_theme", {"theme": "dark"})
    assert paused.events[-1]["finish_reason"] == "client_tool"
    conversation_id = paused.events[0]["conversation_id"]

    fake.script(text_turn("Switched to dark."))
    body = {"thread_id": conversation_id, "client_tool_results": [{"id": call["id"], "result": {"theme": "dark"}}]}
    resumed = well_formed(await chat(client, body))
    assert resumed.text == "Switched to dark."
    response = function_responses(fake.requests[-1])[-1]
    assert response["name"] == "set_theme" and "dark" in str(response)
    part = next(
        p for p in (await detail(client, conversation_id))["messages"][1]["parts"] if p["type"] == "client_tool"
    )
    assert part["result"] == {"theme": "dark"}


async def test_client_tool_results_that_are_too_large_or_malformed_are_refused(client, fake):
    fake.script(handoff_turn(), function_call_turn("get_client_context", {}))
    paused = well_formed(await chat(client, {"message": "what time is it for me"}))
    call = paused.of("client_tool_call")[0]
    conversation_id = paused.events[0]["conversation_id"]
    too_big = {"thread_id": conversation_id, "client_tool_results": [{"id": call["id"], "result": "x" * 20_000}]}
    assert (await chat(client, too_big)).status == 422
    no_result = {"thread_id": conversation_id, "client_tool_results": [{"id": call["id"]}]}
    assert (await chat(client, no_result)).status == 422
    extra = {"thread_id": conversation_id, "client_tool_results": [{"id": call["id"], "result": 1, "x": 2}]}
    assert (await chat(client, extra)).status == 422
    wrong_id = {"thread_id": conversation_id, "client_tool_results": [{"id": "call_other", "result": {}}]}
    assert (await chat(client, wrong_id)).status == 409
    assert (await detail(client, conversation_id))["messages"][1]["status"] == "requires_action"


# --- widgets -------------------------------------------------------------------------------------------------------


async def test_list_tasks_shows_a_widget_whose_checkbox_completes_a_task_through_an_action(client, fake):
    for title in ("milk", "bread"):
        assert (await client.post("/api/tasks", json={"title": title})).status_code == 201
    fake.script(handoff_turn(), function_call_turn("list_tasks", {}), text_turn("Here they are."))
    listed = well_formed(await chat(client, {"message": "list my tasks"}))
    widget = listed.of("widget")[0]
    assert widget["id"] == "task-list" and widget["widget"]["type"] == "card"
    conversation_id = listed.events[0]["conversation_id"]

    checkbox = _find(widget["widget"], "checkbox")
    acted = well_formed(await chat(client, {"thread_id": conversation_id, "action": checkbox["action"]}))
    assert acted.types == ["start", "widget", "text", "done"]
    assert acted.of("widget")[0]["id"] == "task-list"
    assert acted.text.startswith("Completed")
    assert _find(acted.of("widget")[0]["widget"], "checkbox")["checked"] is True
    assert sum(t["completed"] for t in (await client.get("/api/tasks")).json()["data"]) == 1
    assert len(fake.requests) == 3, "actions never reach the model"

    messages = (await detail(client, conversation_id))["messages"]
    stored = next(p for p in messages[1]["parts"] if p["type"] == "widget")
    assert _find(stored["widget"], "checkbox")["checked"] is True, "the stored widget shows the update on reload"
    assert messages[-1]["content"].startswith("Completed")

    unknown = await chat(client, {"thread_id": conversation_id, "action": {"type": "no.such", "payload": {}}})
    assert (unknown.status, unknown.body["error"]["code"]) == (422, "unknown_action")


def _find(node: dict[str, Any], kind: str) -> dict[str, Any]:
    if node.get("type") == kind:
        return node
    for child in node.get("children") or []:
        found = _find(child, kind) if isinstance(child, dict) else None
        if found:
            return found
    return {}


async def test_an_invalid_widget_is_the_tools_error_never_a_broken_stream(gemini_settings, fake):
    @function_tool
    async def show_bad(ctx: RunContextWrapper[ChatContext]) -> str:
        """Show a widget with an unsafe image."""
        assert ctx.context.ui is not None
        ctx.context.ui.show_widget("w", {"type": "card", "children": [{"type": "image", "src": "javascript:x"}]})
        return "unreachable"

    settings = gemini_settings()
    model, model_settings = build_model(settings)
    agent = Agent[ChatContext](name="Tester", tools=[show_bad], model=model, model_settings=model_settings)
    app = create_app(settings)
    fake.script(function_call_turn("show_bad", {}), text_turn("That failed."))
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
        app.state.chat_service.agent = agent
        stream = well_formed(await chat(http, {"message": "show it"}))
    assert "widget" not in stream.types
    assert stream.of("tool_result")[0]["name"] == "show_bad"
    assert stream.events[-1]["finish_reason"] == "stop" and stream.text == "That failed."


# --- a reload shows every part type --------------------------------------------------------------------------------


async def test_a_reloaded_conversation_has_every_part_in_order(client, fake):
    assert (await client.post("/api/tasks", json={"title": "milk"})).status_code == 201
    fake.script(
        handoff_turn(),
        function_call_turn("list_tasks", {}),
        function_call_turn("set_theme", {"theme": "light"}),
    )
    first = well_formed(await chat(client, {"message": "show tasks then light theme"}))
    conversation_id = first.events[0]["conversation_id"]
    call = first.of("client_tool_call")[0]
    fake.script(function_call_turn("delete_task", {"task": "milk"}))
    body = {"thread_id": conversation_id, "client_tool_results": [{"id": call["id"], "result": "ok"}]}
    second = well_formed(await chat(client, body))
    approval = second.of("approval_request")[0]
    fake.script(text_turn(["All ", "done."], thinking=["Let me wrap up."]))
    well_formed(
        await chat(client, {"thread_id": conversation_id, "approvals": [{"id": approval["id"], "approve": True}]})
    )
    parts = (await detail(client, conversation_id))["messages"][1]["parts"]
    assert [p["type"] for p in parts] == [
        "agent",
        "agent",
        "tool_call",
        "widget",
        "client_tool",
        "tool_call",
        "approval",
        "thinking",
        "text",
    ]
    assert parts[-1]["text"] == "All done." and parts[-2]["text"] == "Let me wrap up."
    assert parts[4]["result"] == {"text": "ok"} and parts[5]["result"]["deleted"]["title"] == "milk"


async def test_the_offline_model_pauses_for_approval_on_delete(make_settings):
    async with live(make_settings()) as client:
        await client.post("/api/tasks", json={"title": "milk"})
        paused = well_formed(await chat(client, {"message": "delete milk"}))
        approval = paused.of("approval_request")[0]
        conversation_id = paused.events[0]["conversation_id"]
        resumed = well_formed(
            await chat(client, {"thread_id": conversation_id, "approvals": [{"id": approval["id"], "approve": True}]})
        )
        assert "Deleted" in resumed.text
        await asyncio.sleep(0)
        assert (await client.get("/api/tasks")).json()["data"] == []
