"""Unit tests of the offline demo model (`backend.team.offline`) as a model: its steps, replies and Responses events.

The routing between the team's agents is covered in tests/chat/test_handoffs.py; this covers the model interface itself.
"""

from __future__ import annotations

import json
from typing import Any

from agents import ModelSettings
from openai.types.responses import (
    ResponseCompletedEvent,
    ResponseFunctionToolCall,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseTextDeltaEvent,
)

from backend.team.offline import (
    MAX_HANDOFFS_PER_REQUEST,
    OFFLINE_LABEL,
    OfflineModel,
    _team_step,
    help_text,
)

TASK_TOOLS = ["add_task", "list_tasks", "complete_task", "update_task", "delete_task", "set_theme"]


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def after_call(text: str, tool: str, output: object) -> list[dict[str, Any]]:
    call = {"type": "function_call", "call_id": "c1", "name": tool, "arguments": "{}"}
    return [*user(text), call, {"type": "function_call_output", "call_id": "c1", "output": json.dumps(output)}]


async def streamed(model: OfflineModel, items: list[dict[str, Any]]) -> list[Any]:
    return [event async for event in model.stream_response(None, items, ModelSettings(), [], None, [])]


def test_tool_results_become_short_replies():
    listed = {"tasks": [{"title": "milk", "completed": True}, {"title": "bread", "completed": False}]}
    assert _team_step(after_call("list my tasks", "list_tasks", listed), TASK_TOOLS, {}) == (
        f"{OFFLINE_LABEL} Your tasks:\n- [x] milk\n- [ ] bread"
    )
    added = after_call("add milk", "add_task", {"task": {"title": "milk"}})
    assert _team_step(added, TASK_TOOLS, {}) == f"{OFFLINE_LABEL} Added “milk”."
    failed = after_call("delete milk", "delete_task", {"error": "No task matches 'milk'."})
    assert _team_step(failed, TASK_TOOLS, {}) == f"{OFFLINE_LABEL} That didn't work: No task matches 'milk'."
    themed = after_call("use the dark theme", "set_theme", {"theme": "dark"})
    assert _team_step(themed, TASK_TOOLS, {}) == f"{OFFLINE_LABEL} Done: the page now uses the dark theme."
    timed = after_call("what time is it", "get_client_context", {"local_time": "10:00", "time_zone": "UTC"})
    assert _team_step(timed, ["get_client_context"], {}) == f"{OFFLINE_LABEL} It's 10:00 for you (UTC)."


def test_attachments_are_acknowledged_by_any_agent():
    content = [
        {"type": "input_text", "text": "look"},
        {"type": "input_text", "text": "Attached file a.txt (text/plain, 5 bytes):\n\nhello"},
    ]
    reply = _team_step([{"role": "user", "content": content}], [], {"transfer_to_help": "Help"})
    assert isinstance(reply, str) and reply.startswith(f"{OFFLINE_LABEL} I received 1 file")


def test_handoffs_stop_after_a_few_per_request():
    hops = [
        {"type": "function_call", "call_id": f"h{i}", "name": "transfer_to_triage", "arguments": "{}"}
        for i in range(MAX_HANDOFFS_PER_REQUEST)
    ]
    items = [*user("add milk"), *hops]
    assert _team_step(items, [], {"transfer_to_task_assistant": "Task assistant"}) == help_text()
    assert _team_step(items[:-1], [], {"transfer_to_task_assistant": "Task assistant"}) == (
        "transfer_to_task_assistant",
        {},
    )


async def test_a_reply_streams_word_by_word_as_responses_events():
    model = OfflineModel(word_delay=0)
    events = await streamed(model, user("hello there"))
    deltas = "".join(e.delta for e in events if isinstance(e, ResponseTextDeltaEvent))
    assert deltas == help_text() and deltas.startswith(OFFLINE_LABEL)
    (done,) = [e for e in events if isinstance(e, ResponseOutputItemDoneEvent)]
    assert isinstance(done.item, ResponseOutputMessage)
    completed = events[-1]
    assert isinstance(completed, ResponseCompletedEvent) and completed.response.status == "completed"
    usage = completed.response.usage
    assert usage is not None and usage.output_tokens == len(deltas.split()) and usage.input_tokens == 2
    assert [e.sequence_number for e in events] == list(range(len(events)))


async def test_a_tool_call_is_one_output_item_in_both_modes():
    from agents import FunctionTool

    tool = FunctionTool(
        name="add_task", description="", params_json_schema={}, on_invoke_tool=lambda *_: None, strict_json_schema=False
    )
    model = OfflineModel(word_delay=0)
    events = await streamed_with_tools(model, user("add buy milk"), [tool])
    (done,) = [e for e in events if isinstance(e, ResponseOutputItemDoneEvent)]
    assert isinstance(done.item, ResponseFunctionToolCall)
    assert (done.item.name, json.loads(done.item.arguments)) == ("add_task", {"title": "buy milk"})
    response = await model.get_response(None, user("add buy milk"), ModelSettings(), [tool], None, [])
    (call,) = response.output
    assert isinstance(call, ResponseFunctionToolCall) and call.name == "add_task"
    assert response.usage.requests == 1 and response.usage.output_tokens == 0
    text = await model.get_response(None, "hello", ModelSettings(), [], None, [])
    assert text.usage.output_tokens == len(help_text().split())


async def streamed_with_tools(model: OfflineModel, items: list[dict[str, Any]], tools: list[Any]) -> list[Any]:
    return [event async for event in model.stream_response(None, items, ModelSettings(), tools, None, [])]
