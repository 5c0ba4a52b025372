"""Durable turns and the rich reply in the page: rejoin after a reload or a dropped connection, Stop after a reload,
approvals, client tools, widgets, and a reloaded reply that looks exactly as it did while it streamed."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import expect

from backend.chat.widgets import widget_json
from backend.db import create_database
from backend.models import MessageRole, MessageStatus, Task
from backend.tasks.widgets import task_list_widget
from tests.browser.conftest import ChatServer, script_chatkit, sse
from tests.browser.test_chat_page import (
    ASSISTANT,
    USER,
    ask,
    assistant_text,
    conversation_id_of,
    get_json,
    send,
    wait_for_status,
    wait_until_finished,
)
from tests.fakes.gemini import function_call_turn, handoff_turn, text_turn
from tests.fakes.tcpproxy import TcpProxy
from tests.seeding import append_message, create_conversation

pytestmark = [
    pytest.mark.browser,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.filterwarnings("ignore:.*ReadOnly.*qualifier:UserWarning"),
]

# The last reply's parts as a list of [depth, tag, testid, state, hidden, own text, class]: what the user sees.
REPLY_SHAPE_JS = """() => {
  const replies = document.querySelectorAll('[data-testid="message"][data-role="assistant"]');
  const root = replies[replies.length - 1].querySelector('[data-testid="message-body"]');
  const out = [];
  const walk = (node, depth) => {
    for (const child of node.children) {
      const own = [...child.childNodes].filter((n) => n.nodeType === 3).map((n) => n.textContent).join("");
      out.push([depth, child.tagName, child.dataset.testid || "", child.dataset.state || "", child.hidden, own,
                child.getAttribute("class") || ""]);
      walk(child, depth + 1);
    }
  };
  walk(root, 0);
  return out;
}"""


async def wait_for_text(page: Any, prefix: str, within: float = 10.0) -> str:
    """Wait until the last reply's text starts with `prefix`; return it."""
    deadline = time.monotonic() + within
    while not (shown := await assistant_text(page)).startswith(prefix):
        assert time.monotonic() < deadline, f"the reply never reached {prefix!r}: {shown!r}"
        await asyncio.sleep(0.03)
    return shown


async def wait_for_growth(page: Any, than: str, within: float = 10.0) -> str:
    """Wait until the last reply's text is longer than `than` (and still starts with it); return it."""
    deadline = time.monotonic() + within
    while len(shown := await assistant_text(page)) <= len(than):
        assert time.monotonic() < deadline, f"the reply stopped growing at {shown!r}"
        await asyncio.sleep(0.03)
    assert shown.startswith(than), (shown, than)
    return shown


# --- durable turns ------------------------------------------------------------------------------------------------


async def reload_during_a_reply(server: ChatServer, new_page: Any, word: str, count: int) -> tuple[Any, str, str]:
    """Start a slow reply of `count` words, reload mid-reply, and wait until the reloaded page shows it growing.

    Returns:
        The page, the conversation id and the reply's full text.
    """
    chunks = [f"{word}{i} " for i in range(count)]
    server.fake.script(text_turn(chunks, delay=0.15))
    page, _ = await new_page()
    await page.goto(server.url)
    await send(page, f"Say {word} {count} times")
    start = f"{word}0 {word}1 {word}2"
    await wait_for_text(page, start)
    conversation_id = conversation_id_of(page)

    await page.reload()
    await expect(page.locator(ASSISTANT).last).to_have_attribute("data-status", "streaming")
    await expect(page.get_by_test_id("stop-button")).to_be_visible()
    shown = await wait_for_text(page, start)  # replayed from the start of the turn
    await wait_for_growth(page, shown)  # and followed live
    return page, conversation_id, "".join(chunks).strip()


async def test_reload_during_a_reply_rejoins_it_and_it_finishes(server: ChatServer, new_page: Any) -> None:
    page, conversation_id, full = await reload_during_a_reply(server, new_page, "part", 30)
    message = page.locator(ASSISTANT).last

    await wait_until_finished(page)
    assert await assistant_text(page) == full  # no gap, no duplicate
    await expect(message).to_have_attribute("data-status", "complete")
    await expect(message.get_by_test_id("message-error")).to_have_count(0)
    saved = await wait_for_status(server.url, conversation_id, "complete")
    assert saved["content"].strip() == full
    assert server.fake.disconnects == 0  # the reload did not cancel the run


async def test_stop_after_a_reload_stops_the_run(server: ChatServer, new_page: Any) -> None:
    page, conversation_id, full = await reload_during_a_reply(server, new_page, "chunk", 60)

    await page.get_by_test_id("stop-button").click()
    message = page.locator(ASSISTANT).last
    await expect(message.get_by_test_id("message-stopped")).to_have_text("Stopped")
    await expect(message).to_have_attribute("data-status", "cancelled")
    await expect(page.get_by_test_id("send-button")).to_be_visible()
    saved = await wait_for_status(server.url, conversation_id, "cancelled")  # stopped on the server, not just here
    assert await server.fake.wait_until(lambda f: f.disconnects == 1, within=5)  # the model request was closed
    assert saved["content"].startswith("chunk0 chunk1") and len(saved["content"].strip()) < len(full)
    _, detail = await get_json(server.url, f"/api/conversations/{conversation_id}")
    assert detail["active_message_id"] is None

    await page.reload()
    message = page.locator(ASSISTANT).last
    await expect(message.get_by_test_id("message-stopped")).to_be_visible()
    await expect(page.get_by_test_id("stop-button")).to_be_hidden()


async def test_a_dropped_stream_is_rejoined_with_last_event_id(start_server: Any, new_page: Any) -> None:
    server = await start_server(port=0)  # PORT=0: the Host header may name the proxy's port
    chunks = [f"bit{i} " for i in range(30)]
    server.fake.script(text_turn(chunks, delay=0.15))
    port = urlsplit(server.url).port
    assert port is not None
    async with TcpProxy("127.0.0.1", port) as proxy:
        page, _ = await new_page()
        rejoins: list[Any] = []
        page.on("request", lambda request: rejoins.append(request) if "/stream" in request.url else None)
        await page.goto(f"http://127.0.0.1:{proxy.port}/")
        await send(page, "Count for me")
        shown = await wait_for_text(page, "bit0 bit1 bit2")
        proxy.cut()  # the connection drops mid-reply (as on a flaky mobile network)
        proxy.restore()

        await wait_until_finished(page)
        message = page.locator(ASSISTANT).last
        assert await assistant_text(page) == "".join(chunks).strip()  # nothing lost, nothing twice
        await expect(message).to_have_attribute("data-status", "complete")
        await expect(message.get_by_test_id("message-error")).to_have_count(0)
        assert rejoins, "the page never rejoined"
        after = int(await rejoins[0].header_value("last-event-id"))
        assert after >= len(shown.split())  # it resumed after the events it had, not from the start
        assert "?" not in rejoins[0].url


# --- approvals, client tools and parts (the page's side of the protocol, /chatkit answered by the test) -----------


def scripted_reply(ids: dict[str, str], widget: dict[str, Any]) -> list[str]:
    """A reply that pauses for an approval, then for a client tool, then finishes: one stream per segment."""
    done = {"type": "done", **ids, "usage": {}}
    start = {"type": "start", **ids, "title": "Clean up", "status": "in_progress"}
    return [
        sse(
            start,
            {"type": "agent", "name": "Task assistant"},
            {"type": "thinking", "content": "Let me look "},
            {"type": "thinking", "content": "at the list."},
            {"type": "tool_call", "id": "call-1", "name": "list_tasks", "args": {}},
            {"type": "tool_result", "id": "call-1", "name": "list_tasks", "result": {"tasks": [{"title": "old"}]}},
            {"type": "widget", "id": widget["id"], "widget": widget},
            {"type": "agent", "name": "Help agent"},
            {"type": "text", "content": "You have **one** "},
            {"type": "text", "content": "task."},
            {"type": "approval_request", "id": "call-2", "name": "delete_task", "args": {"task": "old"}},
            {**done, "finish_reason": "approval_required"},
            first_id=1,
        ),
        sse(
            start,
            {"type": "tool_call", "id": "call-2b", "name": "delete_task", "args": {"task": "old"}},
            {"type": "tool_result", "id": "call-2b", "name": "delete_task", "result": {"deleted": {"title": "old"}}},
            {"type": "client_tool_call", "id": "call-3", "name": "set_theme", "args": {"theme": "dark"}},
            {**done, "finish_reason": "client_tool"},
            first_id=20,
        ),
        sse(
            start,
            {"type": "tool_result", "id": "call-3", "name": "set_theme", "result": {"theme": "dark"}},
            {"type": "text", "content": "Deleted it, and the page is dark now."},
            {**done, "finish_reason": "stop"},
            first_id=30,
        ),
    ]


def stored_parts(widget: dict[str, Any]) -> list[dict[str, Any]]:
    """The parts the server stores for `scripted_reply` once it finished (backend/chat/reply.py's fold)."""
    return [
        {"type": "agent", "name": "Task assistant"},
        {"type": "thinking", "text": "Let me look at the list."},
        {
            "type": "tool_call",
            "id": "call-1",
            "name": "list_tasks",
            "args": {},
            "result": {"tasks": [{"title": "old"}]},
        },
        {"type": "widget", "id": widget["id"], "widget": widget},
        {"type": "agent", "name": "Help agent"},
        {"type": "text", "text": "You have **one** task."},
        {"type": "approval", "id": "call-2", "name": "delete_task", "args": {"task": "old"}, "decision": "approved"},
        {
            "type": "tool_call",
            "id": "call-2b",
            "name": "delete_task",
            "args": {"task": "old"},
            "result": {"deleted": {"title": "old"}},
        },
        {
            "type": "client_tool",
            "id": "call-3",
            "name": "set_theme",
            "args": {"theme": "dark"},
            "result": {"theme": "dark"},
        },
        {"type": "text", "text": "Deleted it, and the page is dark now."},
    ]


async def test_approval_and_client_tool_continue_the_same_reply_and_reload_looks_the_same(
    server: ChatServer, new_page: Any
) -> None:
    widget = widget_json(task_list_widget([Task(user_id="local", title="old")]))
    conversation_id, message_id = uuid.uuid4(), uuid.uuid4()
    ids = {"conversation_id": str(conversation_id), "message_id": str(message_id)}
    answers = scripted_reply(ids, widget)
    page, _ = await new_page()
    bodies = await script_chatkit(page, answers)
    await page.goto(server.url)
    await send(page, "Clean up my list")

    reply = page.locator(ASSISTANT).last
    approval = reply.get_by_test_id("approval")
    await expect(approval).to_have_attribute("data-state", "pending")
    await expect(approval.get_by_test_id("approval-args")).to_have_text('task: "old"')
    await expect(reply).to_have_attribute("data-status", "requires_action")
    await expect(page.get_by_test_id("stop-button")).to_be_hidden()
    assert len(bodies) == 1 and uuid.UUID(bodies[0]["client_message_id"]).version == 4
    await expect(reply.get_by_test_id("agent-label")).to_have_count(2)
    await expect(reply.get_by_test_id("agent-label").first).to_be_hidden()  # the entry agent needs no label
    await expect(reply.get_by_test_id("agent-label").last).to_have_text("Help agent")
    assert await page.evaluate("document.documentElement.dataset.theme") is None

    await approval.get_by_role("button", name="Approve delete_task").click()
    await expect(approval).to_have_attribute("data-state", "approved")
    await expect(approval.get_by_test_id("approval-decision")).to_have_text("Approved")
    await expect(reply.get_by_test_id("client-tool-chip")).to_have_attribute("data-state", "done")
    await wait_until_finished(page)
    await expect(reply).to_have_attribute("data-status", "complete")
    assert await assistant_text(page) == "You have one task.Deleted it, and the page is dark now."
    assert bodies[1] == {"thread_id": ids["conversation_id"], "approvals": [{"id": "call-2", "approve": True}]}
    assert bodies[2] == {
        "thread_id": ids["conversation_id"],
        "client_tool_results": [{"id": "call-3", "result": {"theme": "dark"}}],
    }
    # set_theme ran in the page: the theme switched and is kept.
    assert await page.evaluate("document.documentElement.dataset.theme") == "dark"
    assert await page.evaluate("localStorage.getItem('chat.theme')") == "dark"
    background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(23, 24, 28)", background
    await expect(page.locator(ASSISTANT)).to_have_count(1)  # every segment went into the same reply
    streamed = await page.evaluate(REPLY_SHAPE_JS)

    # The server stores the reply as these parts; reloaded, the reply looks exactly as it did while it streamed.
    await page.unroute("**/chatkit")
    database = create_database(server.settings)
    try:
        async with database.sessions() as session:
            await create_conversation(session, "local", "Clean up", id=conversation_id)
            await append_message(session, conversation_id, role=MessageRole.USER, content="Clean up my list")
            await append_message(
                session,
                conversation_id,
                id=message_id,
                role=MessageRole.ASSISTANT,
                content="You have **one** task.Deleted it, and the page is dark now.",
                parts=stored_parts(widget),
                status=MessageStatus.COMPLETE,
                agent="Help agent",
            )
            await session.commit()
    finally:
        await database.dispose()
    await page.reload()
    reply = page.locator(ASSISTANT).last
    await expect(reply).to_have_attribute("data-id", str(message_id))
    await expect(reply.get_by_test_id("approval-decision")).to_have_text("Approved")
    assert await page.evaluate(REPLY_SHAPE_JS) == streamed
    assert await page.evaluate("document.documentElement.dataset.theme") == "dark"  # the theme survived the reload
    thinking = reply.get_by_test_id("thinking")
    assert await thinking.evaluate("(d) => d.tagName === 'DETAILS' && !d.open")
    await expect(reply.get_by_role("checkbox", name="old")).to_be_visible()
    await expect(reply.get_by_role("button", name="Approve delete_task")).to_have_count(0)


async def test_rejected_approval_posts_the_refusal(server: ChatServer, new_page: Any) -> None:
    ids = {"conversation_id": str(uuid.uuid4()), "message_id": str(uuid.uuid4())}
    done = {"type": "done", **ids, "usage": {}}
    answers = [
        sse(
            {"type": "start", **ids, "title": "Delete", "status": "in_progress"},
            {"type": "approval_request", "id": "call-9", "name": "delete_task", "args": {"task": "milk"}},
            {**done, "finish_reason": "approval_required"},
            first_id=1,
        ),
        sse({"type": "text", "content": "OK, I kept milk."}, {**done, "finish_reason": "stop"}, first_id=5),
    ]
    page, _ = await new_page()
    bodies = await script_chatkit(page, answers)
    await page.goto(server.url)
    await send(page, "delete milk")
    reply = page.locator(ASSISTANT).last
    await reply.get_by_role("button", name="Reject delete_task").click()
    await expect(reply.get_by_test_id("approval")).to_have_attribute("data-state", "rejected")
    await expect(reply.get_by_test_id("approval-decision")).to_have_text("Rejected")
    await wait_until_finished(page)
    assert await assistant_text(page) == "OK, I kept milk."
    assert bodies[1] == {"thread_id": ids["conversation_id"], "approvals": [{"id": "call-9", "approve": False}]}


async def test_get_client_context_answers_with_the_browser_facts(server: ChatServer, new_page: Any) -> None:
    ids = {"conversation_id": str(uuid.uuid4()), "message_id": str(uuid.uuid4())}
    done = {"type": "done", **ids, "usage": {}}
    answers = [
        sse(
            {"type": "start", **ids, "title": "Time", "status": "in_progress"},
            {"type": "client_tool_call", "id": "call-4", "name": "get_client_context", "args": {}},
            {**done, "finish_reason": "client_tool"},
            first_id=1,
        ),
        sse({"type": "text", "content": "It is late."}, {**done, "finish_reason": "stop"}, first_id=5),
    ]
    page, _ = await new_page(width=1000, height=700)
    bodies = await script_chatkit(page, answers)
    await page.goto(server.url)
    await send(page, "what time is it for me")
    await wait_until_finished(page)
    assert await assistant_text(page) == "It is late."
    [result] = bodies[1]["client_tool_results"]
    assert result["id"] == "call-4"
    facts = result["result"]
    assert facts["viewport"] == {"width": 1000, "height": 700}
    assert facts["time_zone"] and facts["locale"]
    assert abs(time.time() - _epoch(facts["local_time"])) < 120


def _epoch(iso: str) -> float:
    from datetime import datetime

    parsed = datetime.fromisoformat(iso)
    assert parsed.tzinfo is not None, iso  # ISO with its offset
    return parsed.timestamp()


# --- the same paths end to end: page -> real server -> LiteLLM -> fake Gemini --------------------------------------


async def add_task(base_url: str, title: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        response = await client.post("/api/tasks", json={"title": title})
    assert response.status_code == 201, response.text
    return response.json()


async def task_titles(base_url: str) -> list[str]:
    _, tasks = await get_json(base_url, "/api/tasks")
    return [task["title"] for task in tasks["data"]]


@pytest.mark.parametrize("approve", [True, False], ids=["approve", "reject"])
async def test_delete_waits_for_approval_end_to_end(server: ChatServer, new_page: Any, approve: bool) -> None:
    await add_task(server.url, "old milk")
    server.fake.script(
        handoff_turn(),
        function_call_turn("delete_task", {"task": "old milk"}),
        text_turn("Deleted old milk." if approve else "Fine, I kept old milk."),
    )
    page, _ = await new_page()
    await page.goto(server.url)
    await send(page, "delete old milk")
    reply = page.locator(ASSISTANT).last
    approval = reply.get_by_test_id("approval")
    await expect(approval).to_have_attribute("data-state", "pending")
    await expect(reply).to_have_attribute("data-status", "requires_action")
    assert await task_titles(server.url) == ["old milk"]  # nothing happens before the answer

    label = "Approve delete_task" if approve else "Reject delete_task"
    await approval.get_by_role("button", name=label).click()
    await wait_until_finished(page)
    await expect(approval).to_have_attribute("data-state", "approved" if approve else "rejected")
    assert await assistant_text(page) == ("Deleted old milk." if approve else "Fine, I kept old milk.")
    assert await task_titles(server.url) == ([] if approve else ["old milk"])
    await expect(page.locator(ASSISTANT)).to_have_count(1)

    await page.reload()  # the stored parts show the decision, and no buttons
    reply = page.locator(ASSISTANT).last
    await expect(reply.get_by_test_id("approval-decision")).to_have_text("Approved" if approve else "Rejected")
    await expect(reply.get_by_role("button", name=label)).to_have_count(0)
    assert await assistant_text(page) == ("Deleted old milk." if approve else "Fine, I kept old milk.")


async def test_a_new_message_cancels_a_pending_approval(server: ChatServer, new_page: Any) -> None:
    await add_task(server.url, "old bread")
    server.fake.script(
        handoff_turn(), function_call_turn("delete_task", {"task": "old bread"}), text_turn("Never mind then.")
    )
    page, _ = await new_page()
    await page.goto(server.url)
    await send(page, "delete old bread")
    approval = page.locator(ASSISTANT).first.get_by_test_id("approval")
    await expect(approval).to_have_attribute("data-state", "pending")

    await send(page, "actually, keep it")
    await expect(approval).to_have_attribute("data-state", "cancelled")
    await expect(approval.get_by_role("button")).to_have_count(0)
    await wait_until_finished(page)
    assert await assistant_text(page) == "Never mind then."
    assert await task_titles(server.url) == ["old bread"]

    await page.reload()
    await expect(page.locator(ASSISTANT).first.get_by_test_id("approval-decision")).to_have_text("Cancelled")


async def test_set_theme_runs_in_the_page_end_to_end(server: ChatServer, new_page: Any) -> None:
    server.fake.script(handoff_turn(), function_call_turn("set_theme", {"theme": "dark"}), text_turn("Dark it is."))
    page, _ = await new_page()
    reply = await ask(page, server.url, "switch to dark mode")
    assert await assistant_text(page) == "Dark it is."
    chip = reply.get_by_test_id("client-tool-chip")
    await expect(chip).to_have_attribute("data-state", "done")
    await expect(chip.get_by_test_id("tool-chip-result")).to_contain_text("theme: dark")
    assert await page.evaluate("document.documentElement.dataset.theme") == "dark"
    # The model got the page's result as the tool's output.
    [answered] = [
        part["function_response"]
        for content in server.fake.requests[-1]["contents"]
        for part in content["parts"]
        if part.get("function_response", {}).get("name") == "set_theme"
    ]
    assert answered["name"] == "set_theme" and "dark" in json.dumps(answered["response"]), answered

    await page.reload()
    assert await page.evaluate("document.documentElement.dataset.theme") == "dark"
    await expect(page.locator(ASSISTANT).last.get_by_test_id("client-tool-chip")).to_have_attribute(
        "data-state", "done"
    )


async def test_task_list_widget_checkbox_completes_the_task_end_to_end(server: ChatServer, new_page: Any) -> None:
    await add_task(server.url, "buy milk")
    server.fake.script(handoff_turn(), function_call_turn("list_tasks", {}), text_turn("Here is your list."))
    page, _ = await new_page()
    await ask(page, server.url, "list my tasks")
    reply = page.locator(ASSISTANT).first
    checkbox = reply.get_by_role("checkbox", name="buy milk")
    await expect(checkbox).not_to_be_checked()

    await checkbox.click()
    await expect(reply.get_by_role("checkbox", name="buy milk")).to_be_checked()
    await expect(reply.locator('[data-widget-id]:not([aria-busy="true"])')).to_have_count(1)
    _, tasks = await get_json(server.url, "/api/tasks")
    assert [(t["title"], t["completed"]) for t in tasks["data"]] == [("buy milk", True)]

    shown = await page.evaluate(REPLY_SHAPE_JS)  # the action's short reply, shown as a new message

    await page.reload()  # the stored widget is the latest one, and the action's reply is stored as shown
    await expect(page.locator(ASSISTANT).first.get_by_role("checkbox", name="buy milk")).to_be_checked()
    await expect(page.locator(ASSISTANT)).to_have_count(2)
    assert await page.evaluate(REPLY_SHAPE_JS) == shown


async def test_retry_after_a_network_failure_reuses_the_client_message_id(server: ChatServer, new_page: Any) -> None:
    server.fake.script(text_turn("Sent once."))
    page, _ = await new_page()
    bodies: list[dict[str, Any]] = []

    async def flaky(route: Any) -> None:
        bodies.append(json.loads(route.request.post_data))
        if len(bodies) == 1:
            await route.abort("connectionreset")  # the request never got an answer
        else:
            await route.continue_()

    await page.route("**/chatkit", flaky)
    await page.goto(server.url)
    await send(page, "hello once")
    reply = page.locator(ASSISTANT).last
    await expect(reply.get_by_test_id("message-error-text")).to_contain_text("Could not reach the server")
    await reply.get_by_test_id("retry-button").click()
    await wait_until_finished(page)
    assert await assistant_text(page) == "Sent once."
    assert len(bodies) == 2 and bodies[0]["client_message_id"] == bodies[1]["client_message_id"]
    await expect(page.locator(USER)).to_have_count(1)  # the failed attempt is not shown twice
    _, detail = await get_json(server.url, f"/api/conversations/{conversation_id_of(page)}")
    assert [m["role"] for m in detail["messages"]] == ["user", "assistant"]
