"""The team of agents: SDK handoffs end to end (real uvicorn, the real SDK and LiteLLM, the fake Gemini, both
databases), which agent a turn starts with, history replay across handoffs, and the offline model's routing."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from agents import ModelSettings, Runner, UserError
from agents.run_state import RunState
from sqlalchemy import update

from backend.chat.context import ChatContext
from backend.chat.team import agents_by_name
from backend.db import Database, create_database
from backend.models import Message, MessageRole, TaskCreate
from backend.settings import Settings
from backend.tasks import service as task_service
from backend.team.agents import HELP, TASK_ASSISTANT, TRIAGE, build_agent
from backend.team.offline import OFFLINE_LABEL, OfflineModel, _team_step
from tests.conftest import live
from tests.fakes.gemini import FakeGemini, function_call_turn, handoff_turn, text_turn
from tests.sse import chat

pytestmark = pytest.mark.timeout(60)

TRIAGE_HANDOFFS = {"transfer_to_task_assistant": TASK_ASSISTANT, "transfer_to_help": HELP}
BACK_TO_TRIAGE = {"transfer_to_triage": TRIAGE}
TASK_TOOLS = [
    "add_task",
    "list_tasks",
    "complete_task",
    "update_task",
    "delete_task",
    "set_theme",
    "get_client_context",
]


def declared_tools(request: dict[str, Any]) -> list[str]:
    """The tool names a Gemini request offered the model."""
    return [f["name"] for group in request.get("tools", []) for f in group.get("function_declarations", [])]


def system_text(request: dict[str, Any]) -> str:
    """The system instructions a Gemini request carried."""
    return json.dumps(request.get("system_instruction") or request.get("systemInstruction") or {})


@pytest.fixture
async def client(gemini_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    async with live(gemini_settings()) as http:
        yield http


# --- the team -----------------------------------------------------------------------------------------------------


def test_the_team_is_connected_from_every_agent():
    start = build_agent(OfflineModel(), ModelSettings())
    team = agents_by_name(start)
    assert list(team) == [TRIAGE, TASK_ASSISTANT, HELP]
    assert start.name == TRIAGE
    for agent in team.values():
        assert set(agents_by_name(agent)) == set(team), f"{agent.name} must reach the whole team"
    assert {h.name for h in team[TRIAGE].handoffs} == {TASK_ASSISTANT, HELP}  # type: ignore[union-attr]
    assert [h.name for h in team[HELP].handoffs] == [TRIAGE]  # type: ignore[union-attr]
    assert [t.name for t in team[TASK_ASSISTANT].tools] == TASK_TOOLS
    assert [t.name for t in team[HELP].tools] == ["describe_setup"]
    assert team[TRIAGE].tools == []


async def test_a_run_paused_inside_a_specialist_loads_from_the_starting_agent(db: Database):
    async with db.sessions() as session:  # approval is asked only once the task to delete is found
        await task_service.create_task(session, "u", TaskCreate(title="buy milk"))
    start = build_agent(OfflineModel(word_delay=0), ModelSettings())
    result = Runner.run_streamed(start, "delete buy milk", context=ChatContext(user_id="u", database=db))
    async for _ in result.stream_events():
        pass
    assert [i.name for i in result.interruptions] == ["delete_task"]
    assert result.last_agent.name == TASK_ASSISTANT
    stored = result.to_state().to_json()

    state = await RunState.from_json(start, stored)
    assert [i.name for i in state.get_interruptions()] == ["delete_task"]
    with pytest.raises(UserError, match="not found in agent map"):  # names are what a stored state references
        await RunState.from_json(start, {**stored, "current_agent": {"name": "Renamed assistant"}})


# --- handoffs end to end with the fake Gemini ------------------------------------------------------------------------


async def test_triage_hands_off_and_the_next_turn_starts_with_the_agent_that_answered(client, fake: FakeGemini):
    fake.script(handoff_turn(), function_call_turn("add_task", {"title": "buy milk"}), text_turn("Added."))
    first = await chat(client, {"message": "add buy milk"})

    assert first.types == ["start", "agent", "agent", "tool_call", "tool_result", "text", "done"]
    assert [e["name"] for e in first.of("agent")] == [TRIAGE, TASK_ASSISTANT]
    assert declared_tools(fake.requests[0]) == ["transfer_to_task_assistant", "transfer_to_help"]
    assert set(declared_tools(fake.requests[1])) == {*TASK_TOOLS, "transfer_to_triage"}
    conversation_id = first.events[0]["conversation_id"]
    stored = (await client.get(f"/api/conversations/{conversation_id}")).json()["messages"][1]
    assert stored["agent"] == TASK_ASSISTANT
    assert [p["name"] for p in stored["parts"] if p["type"] == "agent"] == [TRIAGE, TASK_ASSISTANT]

    fake.script(function_call_turn("list_tasks", {}), text_turn("You have one task."))
    second = await chat(client, {"message": "and now list them", "thread_id": conversation_id})

    assert [e["name"] for e in second.of("agent")] == [TASK_ASSISTANT], "no triage round trip for a follow-up"
    assert second.of("tool_result")[0]["result"]["tasks"][0]["title"] == "buy milk"
    follow_up = fake.requests[3]
    assert "transfer_to_triage" in declared_tools(follow_up) and "add_task" in declared_tools(follow_up)
    assert "task assistant" in system_text(follow_up)
    parts = [part for content in follow_up["contents"] for part in content["parts"]]
    calls = [p["function_call"]["name"] for p in parts if "function_call" in p]
    answers = [p["function_response"]["name"] for p in parts if "function_response" in p]
    assert calls == answers == ["transfer_to_task_assistant", "add_task"], "the handoff replays as a paired call"


async def test_an_unknown_stored_agent_falls_back_to_triage(client, fake: FakeGemini, gemini_settings):
    fake.script(handoff_turn("help"), text_turn("I explain things."))
    first = await chat(client, {"message": "what can you do?"})
    assert [e["name"] for e in first.of("agent")] == [TRIAGE, HELP]
    conversation_id = first.events[0]["conversation_id"]

    fake.script(text_turn("Still here."))
    second = await chat(client, {"message": "thanks", "thread_id": conversation_id})
    assert [e["name"] for e in second.of("agent")] == [HELP]
    assert declared_tools(fake.requests[2]) == ["describe_setup", "transfer_to_triage"]

    database = create_database(gemini_settings())
    async with database.sessions() as session:  # the team changed since: that agent no longer exists
        await session.exec(  # type: ignore[call-overload]
            update(Message)
            .where(Message.conversation_id == uuid.UUID(conversation_id), Message.role == MessageRole.ASSISTANT)
            .values(agent="Retired agent")
        )
        await session.commit()
    await database.dispose()
    fake.script(text_turn("Back at the front desk."))
    third = await chat(client, {"message": "hello again", "thread_id": conversation_id})

    assert [e["name"] for e in third.of("agent")] == [TRIAGE]
    assert declared_tools(fake.requests[3]) == ["transfer_to_task_assistant", "transfer_to_help"]
    assert third.of("done")[0]["finish_reason"] == "stop"


async def test_the_help_agent_describes_the_team_with_its_read_only_tool(client, fake: FakeGemini):
    fake.script(handoff_turn("help"), function_call_turn("describe_setup", {}), text_turn("We are three."))
    stream = await chat(client, {"message": "how do I configure you?"})

    assert [e["name"] for e in stream.of("agent")] == [TRIAGE, HELP]
    setup = stream.of("tool_result")[0]["result"]
    team = {agent["name"]: agent for agent in setup["team"]}
    assert list(team) == [TRIAGE, TASK_ASSISTANT, HELP]
    assert team[TASK_ASSISTANT]["task_tools"][0] == "add_task"
    assert team[TASK_ASSISTANT]["client_tools"] == ["set_theme", "get_client_context"]
    assert team[TASK_ASSISTANT]["mcp_tools"] == []
    assert {"GEMINI_API_KEY", "MCP_SERVERS", "MODEL", "attachments"} <= set(setup["settings"])
    assert stream.text == "We are three."


# --- the offline demo model as a team ------------------------------------------------------------------------------


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def handed_off(text: str, tool: str, agent: str) -> list[dict[str, Any]]:
    return [
        *user(text),
        {"type": "function_call", "call_id": "h1", "name": tool, "arguments": "{}"},
        {"type": "function_call_output", "call_id": "h1", "output": json.dumps({"assistant": agent})},
    ]


@pytest.mark.parametrize(
    ("text", "transfer"),
    [
        ("add buy milk", "transfer_to_task_assistant"),
        ("list my tasks", "transfer_to_task_assistant"),
        ("delete buy milk", "transfer_to_task_assistant"),
        ("use the dark theme", "transfer_to_task_assistant"),
        ("what time is it for me?", "transfer_to_task_assistant"),
        ("help", "transfer_to_help"),
        ("What can you do?", "transfer_to_help"),
        ("hello", "transfer_to_help"),
    ],
)
def test_offline_triage_hands_each_request_to_its_specialist(text, transfer):
    assert _team_step(user(text), [], TRIAGE_HANDOFFS) == (transfer, {})


@pytest.mark.parametrize(
    ("text", "call"),
    [
        ("add buy milk", ("add_task", {"title": "buy milk"})),
        ("list my tasks", ("list_tasks", {})),
        ("delete buy milk", ("delete_task", {"task": "buy milk"})),
        ("use the dark theme", ("set_theme", {"theme": "dark"})),
        ("Switch to dark mode", ("set_theme", {"theme": "dark"})),
        ("switch to light mode.", ("set_theme", {"theme": "light"})),
        ("what time is it for me", ("get_client_context", {})),
        ("what's my local time?", ("get_client_context", {})),
    ],
)
def test_offline_task_assistant_calls_the_tool_after_the_handoff(text, call):
    items = handed_off(text, "transfer_to_task_assistant", TASK_ASSISTANT)
    assert _team_step(items, TASK_TOOLS, BACK_TO_TRIAGE) == call


def test_offline_requests_go_back_through_triage_to_the_right_specialist():
    assert _team_step(user("help"), TASK_TOOLS, BACK_TO_TRIAGE) == ("transfer_to_triage", {})
    items = handed_off("help", "transfer_to_triage", TRIAGE)
    assert _team_step(items, [], TRIAGE_HANDOFFS) == ("transfer_to_help", {})
    assert _team_step(user("add buy milk"), ["describe_setup"], BACK_TO_TRIAGE) == ("transfer_to_triage", {})


def test_offline_handoffs_are_bounded_per_request():
    items = user("add buy milk")
    for n in range(3):
        items += [
            {"type": "function_call", "call_id": f"h{n}", "name": "transfer_to_triage", "arguments": "{}"},
            {"type": "function_call_output", "call_id": f"h{n}", "output": "{}"},
        ]
    reply = _team_step(items, [], TRIAGE_HANDOFFS)
    assert isinstance(reply, str) and reply.startswith(OFFLINE_LABEL)


def test_offline_task_assistant_explains_itself_for_anything_else():
    reply = _team_step(user("hello there"), [*TASK_TOOLS, "mcp_fs__read"], BACK_TO_TRIAGE)
    assert isinstance(reply, str) and "GEMINI_API_KEY" in reply and "mcp_fs__read" in reply


def test_offline_help_names_the_specialists_and_the_mcp_tools():
    items = handed_off("what can you do", "transfer_to_help", HELP)
    assert _team_step(items, ["describe_setup"], BACK_TO_TRIAGE) == ("describe_setup", {})
    setup = {
        "team": [
            {"name": TRIAGE, "job": "Routes.", "task_tools": [], "mcp_tools": [], "client_tools": []},
            {"name": TASK_ASSISTANT, "job": "Tasks.", "task_tools": ["add_task"], "mcp_tools": ["mcp_fs__read"]},
            {"name": HELP, "job": "Explains.", "task_tools": [], "mcp_tools": [], "client_tools": []},
        ]
    }
    items += [
        {"type": "function_call", "call_id": "d", "name": "describe_setup", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "d", "output": json.dumps(setup)},
    ]
    reply = _team_step(items, ["describe_setup"], BACK_TO_TRIAGE)
    assert isinstance(reply, str) and reply.startswith(OFFLINE_LABEL)
    assert all(name in reply for name in (TRIAGE, TASK_ASSISTANT, HELP, "mcp_fs__read", "GEMINI_API_KEY"))
    assert "MCP_SERVERS" in reply and "attached" in reply


@pytest.mark.parametrize(
    ("tool", "output", "expected"),
    [
        ("get_client_context", {"local_time": "09:41", "time_zone": "Europe/Berlin"}, "It's 09:41 for you"),
        ("get_client_context", {"locale": "de-DE"}, "locale: de-DE"),
        ("set_theme", {"theme": "dark"}, "dark theme"),
        ("set_theme", {"error": "no page"}, "no page"),
    ],
)
def test_offline_replies_use_the_client_tool_results(tool, output, expected):
    items = [
        *user("x"),
        {"type": "function_call", "call_id": "c", "name": tool, "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c", "output": json.dumps(output)},
    ]
    reply = _team_step(items, TASK_TOOLS, BACK_TO_TRIAGE)
    assert isinstance(reply, str) and reply.startswith(OFFLINE_LABEL) and expected in reply


async def test_offline_demo_shows_a_handoff_to_help_and_back_to_tasks(make_settings):
    async with live(make_settings(offline_model=True)) as client:
        helped = await chat(client, {"message": "what can you do?"})
        assert [e["name"] for e in helped.of("agent")] == [TRIAGE, HELP]
        assert [e["name"] for e in helped.of("tool_call")] == ["describe_setup"]
        assert all(name in helped.text for name in (TRIAGE, TASK_ASSISTANT, HELP, "No MCP tool servers"))

        thread = {"thread_id": helped.events[0]["conversation_id"]}
        added = await chat(client, {"message": "add buy milk", **thread})
        assert [e["name"] for e in added.of("agent")] == [HELP, TRIAGE, TASK_ASSISTANT]
        assert added.of("tool_result")[0]["result"]["task"]["title"] == "buy milk"
        assert added.text == f"{OFFLINE_LABEL} Added “buy milk”."

        listed = await chat(client, {"message": "list my tasks", **thread})
        assert [e["name"] for e in listed.of("agent")] == [TASK_ASSISTANT]
        assert "buy milk" in listed.text


async def test_offline_demo_drives_the_client_tools_and_uses_their_results(make_settings):
    async with live(make_settings(offline_model=True)) as client:
        themed = await chat(client, {"message": "switch to dark mode"})
        assert [e["name"] for e in themed.of("agent")] == [TRIAGE, TASK_ASSISTANT]
        call = themed.of("client_tool_call")[0]
        assert (call["name"], call["args"]) == ("set_theme", {"theme": "dark"})
        assert themed.events[-1]["finish_reason"] == "client_tool"
        thread = themed.events[0]["conversation_id"]
        answered = {"thread_id": thread, "client_tool_results": [{"id": call["id"], "result": {"theme": "dark"}}]}
        done = await chat(client, answered)
        assert done.text == f"{OFFLINE_LABEL} Done: the page now uses the dark theme."

        asked = await chat(client, {"message": "what's my local time?", "thread_id": thread})
        assert [e["name"] for e in asked.of("agent")] == [TASK_ASSISTANT]
        call = asked.of("client_tool_call")[0]
        assert (call["name"], call["args"]) == ("get_client_context", {})
        result = {"local_time": "2026-12-01 09:41", "time_zone": "Europe/Berlin", "locale": "de-DE"}
        told = await chat(client, {"thread_id": thread, "client_tool_results": [{"id": call["id"], "result": result}]})
        assert told.text == f"{OFFLINE_LABEL} It's 2026-12-01 09:41 for you (Europe/Berlin)."
        assert told.events[-1]["finish_reason"] == "stop"
