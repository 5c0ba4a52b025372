"""End-to-end tests of the chat page: system Chromium -> page -> real uvicorn app -> LiteLLM -> fake Gemini."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import expect
from sse_starlette.sse import AppStatus

from tests.browser.conftest import ChatServer
from tests.conftest import SECRET, make_token
from tests.fakes.gemini import error_turn, function_call_turn, handoff_turn, text_turn

pytestmark = [
    pytest.mark.browser,
    pytest.mark.asyncio(loop_scope="module"),
    # litellm 1.109.1 triggers pydantic "ReadOnly qualifier" UserWarnings on first use; they are not ours.
    pytest.mark.filterwarnings("ignore:.*ReadOnly.*qualifier:UserWarning"),
]

ROOT = Path(__file__).resolve().parents[2]
STATIC_SCREENSHOT = ROOT / "backend" / "web" / "static" / "screenshot.png"
ASSISTANT = '[data-testid="message"][data-role="assistant"]'
USER = '[data-testid="message"][data-role="user"]'
XSS = "<img src=x onerror=alert(1)>"

ASSISTANT_TEXT_JS = """(index) => {
  const all = document.querySelectorAll('[data-testid="message"][data-role="assistant"]');
  const message = all[index < 0 ? all.length + index : index];
  if (!message) return null;
  return Array.from(message.querySelectorAll('[data-testid="message-text"]')).map((n) => n.textContent).join("");
}"""


async def assistant_text(page: Any, index: int = -1) -> str:
    """The rendered text of an assistant message (the last one by default), tool chips and badges excluded."""
    return await page.evaluate(ASSISTANT_TEXT_JS, index) or ""


async def send(page: Any, text: str) -> None:
    """Type a message into the composer and press Enter."""
    box = page.get_by_test_id("composer-input")
    await box.fill(text)
    await box.press("Enter")


async def wait_until_finished(page: Any) -> None:
    """Wait until no reply is streaming (the Stop button is gone and the last reply is not streaming)."""
    await expect(page.get_by_test_id("stop-button")).to_be_hidden()
    await expect(page.locator(ASSISTANT).last).not_to_have_attribute("data-status", "streaming")


async def ask(page: Any, url: str, text: str) -> Any:
    """Open the page at `url`, send `text` and wait until the reply finished; returns the last reply's locator."""
    await page.goto(url)
    await send(page, text)
    await wait_until_finished(page)
    return page.locator(ASSISTANT).last


async def chat(base_url: str, message: str, thread_id: str | None = None, token: str | None = None) -> str:
    """Post a message through the API (as another client would) and read the stream; return the conversation id."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body: dict[str, Any] = {"message": message}
    if thread_id:
        body["thread_id"] = thread_id
    conversation_id = ""
    async with (
        httpx.AsyncClient(base_url=base_url, headers=headers, timeout=20) as client,
        client.stream("POST", "/chatkit", json=body) as response,
    ):
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                event = json.loads(line[6:])
                if event["type"] == "start":
                    conversation_id = event["conversation_id"]
    return conversation_id


async def get_json(base_url: str, path: str, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=10) as client:
        response = await client.get(path)
    return response.status_code, response.json() if response.content else None


async def wait_for_status(base_url: str, conversation_id: str, status: str, within: float = 10.0) -> dict[str, Any]:
    """Poll the API until the conversation's last message has `status`; return that message."""
    deadline = time.monotonic() + within
    while True:
        _, detail = await get_json(base_url, f"/api/conversations/{conversation_id}")
        last = detail["messages"][-1] if detail and detail.get("messages") else None
        if last and last["role"] == "assistant" and last["status"] == status:
            return last
        assert time.monotonic() < deadline, f"last message never reached {status!r}: {last}"
        await asyncio.sleep(0.05)


def conversation_id_of(page: Any) -> str:
    assert "#c=" in page.url, page.url
    return page.url.split("#c=", 1)[1]


# --- streaming --------------------------------------------------------------------------------------------------------


async def test_reply_streams_delta_by_delta_and_appears_in_sidebar(server: ChatServer, new_page: Any) -> None:
    words = [f"word{i} " for i in range(12)]
    server.fake.script(text_turn(words, delay=0.15, first_delay=0.5))
    page, probe = await new_page()
    await page.goto(server.url)
    await expect(page.get_by_test_id("empty-state")).to_be_visible()
    await expect(page.get_by_test_id("send-button")).to_be_disabled()

    box = page.get_by_test_id("composer-input")
    await box.fill("first line")
    await box.press("Shift+Enter")  # a newline, not a send
    await box.press_sequentially("second line")
    await expect(page.locator(USER)).to_have_count(0)
    await box.press("Enter")

    await expect(page.locator(USER).get_by_test_id("message-text")).to_have_text("first line\nsecond line")
    await expect(page.get_by_test_id("stop-button")).to_be_visible()
    await expect(page.get_by_test_id("send-button")).to_be_hidden()
    await expect(page.get_by_test_id("typing-indicator")).to_be_visible()
    # The conversation shows up in the sidebar as soon as `start` arrives, while the reply is still on its way.
    item = page.get_by_test_id("conversation-item")
    await expect(item).to_have_count(1)
    await expect(item.get_by_test_id("conversation-item-title")).to_have_text("first line second line")
    assert await assistant_text(page) == ""
    assert await page.get_by_test_id("stop-button").is_visible()
    await expect(page.get_by_test_id("chat-title")).to_have_text("first line second line")

    lengths: list[int] = []
    deadline = time.monotonic() + 10
    while await page.locator(ASSISTANT).last.get_attribute("data-status") == "streaming":
        length = len(await assistant_text(page))
        if not lengths or length != lengths[-1]:
            lengths.append(length)
        assert time.monotonic() < deadline, "the reply never finished"
        await asyncio.sleep(0.03)
    lengths.append(len(await assistant_text(page)))

    growth = [n for n in dict.fromkeys(lengths) if n > 0]
    assert growth == sorted(growth), lengths
    assert len(growth) >= 5, f"the reply did not grow delta by delta: {lengths}"
    assert await assistant_text(page) == "".join(words).strip()

    await wait_until_finished(page)
    await expect(page.locator(ASSISTANT).last).to_have_attribute("data-status", "complete")
    await expect(page.get_by_test_id("typing-indicator")).to_be_hidden()
    await expect(page.locator(ASSISTANT).last.get_by_test_id("message-body")).to_have_attribute("aria-busy", "false")
    conversation_id = conversation_id_of(page)
    await expect(item).to_have_attribute("data-id", conversation_id)
    await expect(item.get_by_test_id("conversation-link")).to_have_attribute("aria-current", "page")
    await expect(page.get_by_test_id("composer-input")).to_be_focused()
    assert not probe.dialogs


async def test_keepalive_pings_between_deltas_lose_nothing(server: ChatServer, new_page: Any) -> None:
    # KEEPALIVE_SECONDS is 1 here, so ": ping" comments (which sse-starlette ends with \r\n\r\n, unlike the data
    # frames' \n\n) arrive before and between the deltas; the page must skip them and keep every delta.
    server.fake.script(text_turn(["Slow ", "but ", "complete."], first_delay=1.1, delay=1.1))
    page, _ = await new_page()
    await page.goto(server.url)
    await send(page, "Take your time")
    await wait_until_finished(page)
    assert await assistant_text(page) == "Slow but complete."
    await expect(page.locator(ASSISTANT).last).to_have_attribute("data-status", "complete")


# --- tool chips, thinking, reload, screenshots ------------------------------------------------------------------------


async def test_tool_chip_turns_into_result_and_reload_restores_it(
    server: ChatServer, new_page: Any, artifacts_dir: Path
) -> None:
    server.fake.script(
        handoff_turn(),  # a new conversation starts with triage
        function_call_turn("add_task", {"title": "buy milk"}),
        text_turn(
            "Added **buy milk** to your list. Anything else?",
            delay=0.05,
            thinking=["The user wants a task called buy milk."],
        ),
    )
    page, _ = await new_page()
    await page.goto(server.url)
    await expect(page.get_by_test_id("empty-state")).to_be_visible()
    # Record every chip state change, so the running -> done transition is seen even if both events share a chunk.
    await page.evaluate(
        """() => {
      window.__chipStates = [];
      new MutationObserver((records) => {
        for (const r of records) {
          if (r.type === "attributes" && r.target.dataset.testid === "tool-chip")
            window.__chipStates.push([r.oldValue, r.target.dataset.state]);
          for (const n of r.addedNodes)
            if (n.nodeType === 1) for (const chip of [n, ...n.querySelectorAll("[data-testid=tool-chip]")])
              if (chip.dataset.testid === "tool-chip") window.__chipStates.push([null, chip.dataset.state]);
        }
      }).observe(document.body, {subtree: true, childList: true, attributes: true,
                                 attributeFilter: ["data-state"], attributeOldValue: true});
    }"""
    )
    await send(page, "Add buy milk to my list")

    chip = page.locator(ASSISTANT).last.get_by_test_id("tool-chip")
    await expect(chip).to_be_visible()
    await expect(chip.get_by_test_id("tool-chip-name")).to_have_text("add_task")
    await expect(chip.get_by_test_id("tool-chip-args")).to_have_text('title: "buy milk"')
    await expect(chip).to_have_attribute("data-state", "done")
    await expect(chip.get_by_test_id("tool-chip-result")).to_contain_text("buy milk")
    states = await page.evaluate("window.__chipStates")
    # Records are delivered after both events were handled, so added nodes already show their final state; the
    # attribute record's old value proves the chip was rendered as running before its result arrived.
    assert [old for old, new in states if old is not None] == ["running"], states

    await wait_until_finished(page)
    assert await assistant_text(page) == "Added buy milk to your list. Anything else?"
    await expect(page.locator(ASSISTANT).last.locator("strong")).to_have_text("buy milk")
    thinking = page.get_by_test_id("thinking")
    await expect(thinking).to_be_visible()
    assert await thinking.evaluate("(d) => d.tagName === 'DETAILS' && !d.open")
    await expect(thinking.get_by_test_id("thinking-text")).to_be_hidden()
    await expect(thinking.get_by_test_id("thinking-text")).to_have_text("The user wants a task called buy milk.")

    # The real tool wrote the task for the local user.
    status, tasks = await get_json(server.url, "/api/tasks")
    assert status == 200 and [t["title"] for t in tasks["data"]] == ["buy milk"]

    # A second exchange, then reload: the conversation is rebuilt from GET /api/conversations/{id}.
    server.fake.script(
        function_call_turn("list_tasks", {}),
        text_turn("You have **1 open task**:\n\n- buy milk\n\nSay *done* when you have it.", delay=0.02),
    )
    await send(page, "What's on my list?")
    await wait_until_finished(page)
    conversation_id = conversation_id_of(page)

    await page.reload()
    await expect(page.locator(USER)).to_have_count(2)
    await expect(page.locator(ASSISTANT)).to_have_count(2)
    await expect(page.get_by_test_id("chat-title")).to_have_text("Add buy milk to my list")
    restored = page.locator(ASSISTANT).first.get_by_test_id("tool-chip")
    await expect(restored).to_have_attribute("data-state", "done")
    await expect(restored.get_by_test_id("tool-chip-name")).to_have_text("add_task")
    await expect(restored.get_by_test_id("tool-chip-args")).to_have_text('title: "buy milk"')
    await expect(restored.get_by_test_id("tool-chip-result")).to_contain_text("buy milk")
    await expect(page.locator(ASSISTANT).last.get_by_test_id("tool-chip-result")).to_contain_text("1 task")
    assert await assistant_text(page, 0) == "Added buy milk to your list. Anything else?"
    await expect(page.locator(ASSISTANT).last.get_by_test_id("message-text").locator("li")).to_have_text("buy milk")
    assert conversation_id_of(page) == conversation_id

    # Opening the chip shows the full arguments and result.
    await restored.locator("summary").click()
    await expect(restored.locator("pre").first).to_contain_text('"title": "buy milk"')
    await restored.locator("summary").click()

    await page.mouse.move(0, 0)
    await page.get_by_test_id("composer-input").blur()
    await page.screenshot(path=str(artifacts_dir / "chat.png"))
    if os.environ.get("UPDATE_SCREENSHOT") == "1" or not STATIC_SCREENSHOT.exists():
        shutil.copyfile(artifacts_dir / "chat.png", STATIC_SCREENSHOT)


# --- sidebar: open, rename, delete, pagination ------------------------------------------------------------------------


async def test_rename_and_delete_conversation(server: ChatServer, new_page: Any) -> None:
    older = await chat(server.url, "An older chat")
    conversation_id = await chat(server.url, "Plan the weekend")
    page, _ = await new_page()
    await page.goto(server.url)
    items = page.get_by_test_id("conversation-item")
    await expect(items.get_by_test_id("conversation-item-title")).to_have_text(["Plan the weekend", "An older chat"])

    item = page.locator(f'[data-testid="conversation-item"][data-id="{conversation_id}"]')
    await item.get_by_test_id("conversation-link").click()
    await expect(page.get_by_test_id("chat-title")).to_have_text("Plan the weekend")
    assert conversation_id_of(page) == conversation_id
    await expect(page.locator(USER).get_by_test_id("message-text")).to_have_text("Plan the weekend")

    # Escape cancels a rename; Enter saves it.
    await item.get_by_test_id("rename-conversation").click()
    rename = item.get_by_test_id("rename-input")
    await expect(rename).to_be_focused()
    await rename.fill("Never saved")
    await rename.press("Escape")
    await expect(item.get_by_test_id("conversation-item-title")).to_have_text("Plan the weekend")
    await item.get_by_test_id("rename-conversation").click()
    await item.get_by_test_id("rename-input").fill("Weekend <b>plans</b>")
    await item.get_by_test_id("rename-input").press("Enter")
    await expect(item.get_by_test_id("conversation-item-title")).to_have_text("Weekend <b>plans</b>")
    await expect(page.get_by_test_id("chat-title")).to_have_text("Weekend <b>plans</b>")
    _, detail = await get_json(server.url, f"/api/conversations/{conversation_id}")
    assert detail["title"] == "Weekend <b>plans</b>"

    await page.reload()
    await expect(item.get_by_test_id("conversation-item-title")).to_have_text("Weekend <b>plans</b>")
    await expect(page.get_by_test_id("chat-title")).to_have_text("Weekend <b>plans</b>")

    # Delete asks first; Cancel keeps it.
    await item.get_by_test_id("delete-conversation").click()
    dialog = page.get_by_test_id("delete-dialog")
    await expect(dialog).to_be_visible()
    await expect(dialog.get_by_test_id("delete-text")).to_contain_text("Weekend <b>plans</b>")
    await dialog.get_by_test_id("delete-cancel").click()
    await expect(dialog).to_be_hidden()
    await expect(items).to_have_count(2)

    await item.get_by_test_id("delete-conversation").click()
    await dialog.get_by_test_id("delete-confirm").click()
    await expect(items).to_have_count(1)
    await expect(items).to_have_attribute("data-id", older)
    await expect(page.get_by_test_id("chat-title")).to_have_text("New chat")
    await expect(page.get_by_test_id("empty-state")).to_be_visible()
    assert "#c=" not in page.url
    status, _ = await get_json(server.url, f"/api/conversations/{conversation_id}")
    assert status == 404

    # A stale link to the deleted conversation shows a notice, not a broken page.
    await page.goto(f"{server.url}/#c={conversation_id}")
    await expect(page.get_by_test_id("thread-notice")).to_contain_text("does not exist")


async def test_sidebar_pages_with_load_more_and_new_chat(server: ChatServer, new_page: Any) -> None:
    for i in range(23):
        await chat(server.url, f"Conversation {i:02d}")
    page, _ = await new_page()
    await page.goto(server.url)
    titles = page.get_by_test_id("conversation-item-title")
    await expect(titles).to_have_count(20)
    await expect(titles.first).to_have_text("Conversation 22")  # newest first
    await page.get_by_test_id("load-more").click()
    await expect(titles).to_have_count(23)
    await expect(titles.last).to_have_text("Conversation 00")
    await expect(page.get_by_test_id("load-more")).to_be_hidden()

    await titles.last.click()
    await expect(page.get_by_test_id("chat-title")).to_have_text("Conversation 00")
    await expect(page.locator(ASSISTANT)).to_have_count(1)
    await page.get_by_test_id("new-chat").click()
    await expect(page.get_by_test_id("empty-state")).to_be_visible()
    await expect(page.get_by_test_id("chat-title")).to_have_text("New chat")
    await expect(page.get_by_test_id("composer-input")).to_be_focused()
    await page.go_back()  # the previous conversation is one history entry back
    await expect(page.get_by_test_id("chat-title")).to_have_text("Conversation 00")


# --- stop, errors, retry ----------------------------------------------------------------------------------------------


async def test_stop_keeps_the_partial_reply_marked_stopped(server: ChatServer, new_page: Any) -> None:
    chunks = [f"chunk{i} " for i in range(40)]
    server.fake.script(text_turn(chunks, delay=0.2))
    page, _ = await new_page()
    await page.goto(server.url)
    await send(page, "Tell me a long story")
    deadline = time.monotonic() + 10
    while len(await assistant_text(page)) < len("chunk0 chunk1 chunk2"):
        assert time.monotonic() < deadline, "no text arrived"
        await asyncio.sleep(0.03)
    await page.get_by_test_id("stop-button").click()

    message = page.locator(ASSISTANT).last
    await expect(message.get_by_test_id("message-stopped")).to_have_text("Stopped")
    await expect(message).to_have_attribute("data-status", "cancelled")
    await expect(page.get_by_test_id("stop-button")).to_be_hidden()
    await expect(page.get_by_test_id("send-button")).to_be_visible()
    shown = await assistant_text(page)
    assert shown.startswith("chunk0 chunk1 chunk2")
    assert len(shown) < len("".join(chunks).strip())

    conversation_id = conversation_id_of(page)
    saved = await wait_for_status(server.url, conversation_id, "cancelled")
    assert saved["content"].startswith(shown)
    assert await server.fake.wait_until(lambda f: f.disconnects == 1, within=5)

    await page.reload()
    message = page.locator(ASSISTANT).last
    await expect(message.get_by_test_id("message-stopped")).to_be_visible()
    await expect(message).to_have_attribute("data-status", "cancelled")
    restored = await assistant_text(page)
    assert restored.startswith(shown) and len(restored) < len("".join(chunks).strip())

    # The conversation goes on after a stop.
    server.fake.script(text_turn("Fine, the short version."))
    await send(page, "Just the ending")
    await wait_until_finished(page)
    assert await assistant_text(page) == "Fine, the short version."


async def test_upstream_error_shows_inline_with_retry(server: ChatServer, new_page: Any) -> None:
    server.fake.script(error_turn(400))
    page, _ = await new_page()
    await page.goto(server.url)
    await send(page, "Hello there")

    message = page.locator(ASSISTANT).last
    error = message.get_by_test_id("message-error")
    await expect(error).to_be_visible()
    await expect(error).to_have_attribute("role", "alert")
    await expect(error.get_by_test_id("message-error-text")).to_have_text("The model provider rejected the request.")
    await expect(message).to_have_attribute("data-status", "error")
    await wait_until_finished(page)

    server.fake.script(text_turn("Recovered after the retry."))
    await error.get_by_test_id("retry-button").click()
    await expect(page.locator(ASSISTANT)).to_have_count(2)
    await wait_until_finished(page)
    assert await assistant_text(page) == "Recovered after the retry."
    await expect(page.get_by_test_id("retry-button")).to_have_count(0)
    # The same message was re-sent.
    last_request = server.fake.requests[-1]
    assert last_request["contents"][-1]["parts"][0]["text"] == "Hello there"

    await page.reload()
    await expect(page.locator(ASSISTANT)).to_have_count(2)
    await expect(page.locator(USER).get_by_test_id("message-text")).to_have_text(["Hello there", "Hello there"])
    await expect(page.locator(ASSISTANT).first.get_by_test_id("message-error")).to_contain_text("rejected")
    await expect(page.locator(ASSISTANT).first).to_have_attribute("data-status", "error")
    assert await assistant_text(page) == "Recovered after the retry."


async def test_last_errored_reply_can_be_retried_after_reload(server: ChatServer, new_page: Any) -> None:
    server.fake.script(error_turn(400))
    conversation_id = await chat(server.url, "Try this")
    page, _ = await new_page()
    await page.goto(f"{server.url}/#c={conversation_id}")
    retry = page.locator(ASSISTANT).last.get_by_test_id("retry-button")
    await expect(retry).to_be_visible()
    server.fake.script(text_turn("It worked."))
    await retry.click()
    await wait_until_finished(page)
    assert await assistant_text(page) == "It worked."
    assert conversation_id_of(page) == conversation_id


async def test_server_shutdown_mid_reply_is_shown_and_can_be_retried(
    server: ChatServer, new_page: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.fake.script(text_turn([f"w{i} " for i in range(40)], delay=0.2))
    page, _ = await new_page()
    await page.goto(server.url)
    await send(page, "Count slowly")
    deadline = time.monotonic() + 10
    while len(await assistant_text(page)) < len("w0 w1 w2"):
        assert time.monotonic() < deadline, "no text arrived"
        await asyncio.sleep(0.03)
    # What uvicorn's SIGTERM handler does for sse-starlette (its patched Server.handle_exit sets this flag): open
    # streams are told to finish. Done in-process because a cold `python -m backend` takes too long to start here
    # (tests/chat/test_chat_stream.py covers the real SIGTERM); monkeypatch resets the process-wide flag afterwards.
    monkeypatch.setattr(AppStatus, "should_exit", True)
    message = page.locator(ASSISTANT).last
    await expect(message.get_by_test_id("message-error-text")).to_have_text(
        "The server is restarting. Send the message again."
    )
    monkeypatch.setattr(AppStatus, "should_exit", False)
    await expect(message.get_by_test_id("message-stopped")).to_be_visible()
    await expect(message.get_by_test_id("retry-button")).to_be_visible()
    await wait_until_finished(page)
    conversation_id = conversation_id_of(page)
    saved = await wait_for_status(server.url, conversation_id, "cancelled")
    assert saved["error_code"] == "server_shutdown"

    # After the "restart" the partial reply is shown stopped, with the reason and a Retry that works.
    await page.reload()
    message = page.locator(ASSISTANT).last
    await expect(message.get_by_test_id("message-stopped")).to_be_visible()
    await expect(message.get_by_test_id("message-error-text")).to_have_text(
        "The server is restarting. Send the message again."
    )
    assert (await assistant_text(page)).startswith("w0 w1 w2")
    server.fake.script(text_turn("Back again."))
    await message.get_by_test_id("retry-button").click()
    await wait_until_finished(page)
    assert await assistant_text(page) == "Back again."
    await expect(page.locator(USER).get_by_test_id("message-text")).to_have_text(["Count slowly", "Count slowly"])


# --- safety -----------------------------------------------------------------------------------------------------------


async def test_html_in_messages_is_rendered_as_text(server: ChatServer, new_page: Any) -> None:
    reply = f"Here it is: {XSS} and <script>alert(2)</script> and [a link](javascript:alert(3)) **<b>x</b>**"
    server.fake.script(handoff_turn(), function_call_turn("add_task", {"title": XSS}), text_turn(reply, delay=0.01))
    page, probe = await new_page()
    await page.goto(server.url)
    await send(page, f"Add {XSS}")
    await wait_until_finished(page)

    async def check() -> None:
        await expect(page.locator(USER).get_by_test_id("message-text")).to_have_text(f"Add {XSS}")
        await expect(page.get_by_test_id("conversation-item-title")).to_have_text(f"Add {XSS}")
        await expect(page.get_by_test_id("tool-chip-args")).to_have_text(f'title: "{XSS}"')
        await expect(page.get_by_test_id("tool-chip-result")).to_contain_text(XSS)
        text = await assistant_text(page)
        assert XSS in text and "<script>alert(2)</script>" in text and "<b>x</b>" in text
        assert await page.locator("img").count() == 0
        assert await page.locator("script").count() == 1  # only the page's own module
        assert await page.locator("b").count() == 0
        hrefs = await page.eval_on_selector_all("a", "(links) => links.map((a) => a.href)")
        assert not [h for h in hrefs if h.lower().startswith("javascript:")], hrefs

    await check()
    await page.reload()
    await expect(page.locator(ASSISTANT)).to_have_count(1)
    await check()
    await page.wait_for_timeout(200)
    assert probe.dialogs == []


async def test_sse_parser_handles_split_frames_comments_and_done(server: ChatServer, new_page: Any) -> None:
    page, _ = await new_page()
    await page.goto(server.url)
    result = await page.evaluate(
        r"""async () => {
      const { readEventStream } = await import("/static/sse.js");
      const wire = ": ping - 2024-01-01\r\n\r\n"
        + 'data: {"type":"start","conversation_id":"c","message_id":"m","title":"t"}\n\n'
        + 'data: {"type":"text","content":"h\u00e9llo \u2713 \ud83d\ude00"}\r\n\r\n'
        + ": a comment inside a frame\n"
        + 'data: {"type":"text",\n'
        + 'data: "content":"two lines"}\n\n'
        + "\r\r"
        + 'data:{"type":"done","finish_reason":"stop"}\r\r'
        + "data: [DONE]\n\n"
        + 'data: {"type":"text","content":"after the end"}\n\n';
      const bytes = new TextEncoder().encode(wire);
      const runs = [];
      for (const size of [1, 2, 3, 5, 7, 64, bytes.length]) {
        const body = new ReadableStream({
          start(controller) {
            for (let i = 0; i < bytes.length; i += size) controller.enqueue(bytes.slice(i, i + size));
            controller.close();
          },
        });
        const events = [];
        const ended = await readEventStream(body, (e) => events.push(e));
        runs.push({ size, ended, events });
      }
      return runs;
    }"""
    )
    expected = [
        {"type": "start", "conversation_id": "c", "message_id": "m", "title": "t"},
        {"type": "text", "content": "héllo ✓ 😀"},
        {"type": "text", "content": "two lines"},
        {"type": "done", "finish_reason": "stop"},
    ]
    for run in result:
        assert run["ended"] is True, run
        assert run["events"] == expected, run


async def test_markdown_renderer_formats_safely(server: ChatServer, new_page: Any) -> None:
    page, probe = await new_page()
    await page.goto(server.url)
    html = await page.evaluate(
        r"""async () => {
      const { renderMarkdown } = await import("/static/markdown.js");
      const box = document.createElement("div");
      box.append(renderMarkdown([
        "# Title", "Some **bold**, *em*, `code <i>` and snake_case_name.", "",
        "- one", "- two", "  - nested", "", "1. first", "2. second", "",
        "```js", "alert('<b>')", "```", "",
        "[safe](https://example.com/a?b=1) [bad](javascript:alert(1)) https://example.org/x.",
        "| a | b |", "|---|:-:|", "| <img src=x onerror=alert(1)> | 2 |",
      ].join("\n")));
      return box.innerHTML;
    }"""
    )
    assert "<h3" in html and "<strong>bold</strong>" in html and "<em>em</em>" in html
    assert "<code>code &lt;i&gt;</code>" in html and "snake_case_name" in html
    assert html.count("<li>") == 5 and "<ol>" in html
    assert "alert('&lt;b&gt;')" in html and 'data-lang="js"' in html
    assert 'href="https://example.com/a?b=1"' in html and 'href="https://example.org/x"' in html
    assert "javascript:" not in html.replace("(javascript:alert(1))", "")
    assert "<table>" in html and "&lt;img src=x onerror=alert(1)&gt;" in html and "<img" not in html
    assert probe.dialogs == []


# --- authentication ---------------------------------------------------------------------------------------------------


async def test_token_prompt_when_auth_is_required(start_server: Any, new_page: Any) -> None:
    server = await start_server(auth_secret=SECRET)
    server.fake.script(text_turn("Hello Alice."))
    page, probe = await new_page()
    await page.goto(server.url)

    dialog = page.get_by_test_id("token-dialog")
    await expect(dialog).to_be_visible()
    await expect(page.get_by_test_id("token-input")).to_be_focused()
    await expect(page.get_by_test_id("token-reason")).to_be_hidden()  # nothing was rejected yet
    await expect(page.get_by_test_id("conversations-empty")).to_contain_text("Sign in")

    # Dismissing the prompt leaves a usable page with a way back to it; sending asks again and keeps the text.
    await dialog.get_by_test_id("token-cancel").click()
    await expect(dialog).to_be_hidden()
    await expect(page.get_by_test_id("auth-banner")).to_be_visible()
    await send(page, "hi there")
    await expect(dialog).to_be_visible()
    await expect(page.get_by_test_id("composer-input")).to_have_value("hi there")
    await expect(page.locator(USER)).to_have_count(0)

    token = make_token("alice")
    await page.get_by_test_id("token-input").fill(token)
    await page.get_by_test_id("token-save").click()
    await expect(dialog).to_be_hidden()
    await expect(page.get_by_test_id("auth-banner")).to_be_hidden()
    assert await page.evaluate("localStorage.getItem('chat.token')") == token

    await page.get_by_test_id("composer-input").press("Enter")
    await wait_until_finished(page)
    assert await assistant_text(page) == "Hello Alice."
    await expect(page.get_by_test_id("conversation-item")).to_have_count(1)
    status, listing = await get_json(server.url, "/api/conversations", token=make_token("alice"))
    assert status == 200 and [c["title"] for c in listing["data"]] == ["hi there"]

    await page.reload()
    await expect(page.get_by_test_id("conversation-item")).to_have_count(1)
    await expect(page.locator(ASSISTANT)).to_have_count(1)
    await expect(dialog).to_be_hidden()
    assert probe.dialogs == []


async def test_token_from_url_fragment(start_server: Any, new_page: Any) -> None:
    server = await start_server(auth_secret=SECRET)
    conversation_id = await chat(server.url, "Seeded for Bob", token=make_token("bob"))
    page, _ = await new_page()
    token = make_token("bob")
    await page.goto(f"{server.url}/#c={conversation_id}&token={token}")
    await expect(page.get_by_test_id("conversation-item-title")).to_have_text("Seeded for Bob")
    await expect(page.get_by_test_id("chat-title")).to_have_text("Seeded for Bob")
    await expect(page.locator(ASSISTANT)).to_have_count(1)
    await expect(page.get_by_test_id("token-dialog")).to_be_hidden()
    assert "token" not in page.url and page.url.endswith(f"#c={conversation_id}")
    assert await page.evaluate("localStorage.getItem('chat.token')") == token

    # An expired token from the fragment gets the prompt with the reason, not a broken page.
    page, _ = await new_page()
    await page.goto(f"{server.url}/#token={make_token('bob', expires_in=-60)}")
    await expect(page.get_by_test_id("token-dialog")).to_be_visible()
    await expect(page.get_by_test_id("token-reason")).to_have_text(
        "The saved token was not accepted: The token has expired."
    )
    await page.get_by_test_id("token-input").fill(f"Bearer {token}")  # a pasted "Bearer " prefix is fine
    await page.get_by_test_id("token-save").click()
    await expect(page.get_by_test_id("conversation-item-title")).to_have_text("Seeded for Bob")
    await expect(page.get_by_test_id("token-button")).to_be_visible()


# --- phone width ------------------------------------------------------------------------------------------------------


async def test_phone_width_sidebar_behind_toggle(server: ChatServer, new_page: Any, artifacts_dir: Path) -> None:
    server.fake.script(
        handoff_turn(),
        function_call_turn("add_task", {"title": "call the plumber"}),
        text_turn("Done: **call the plumber** is on your list."),
    )
    conversation_id = await chat(server.url, "Remind me to call the plumber")
    page, _ = await new_page(width=390, height=844)
    await page.goto(f"{server.url}/#c={conversation_id}")
    await expect(page.get_by_test_id("tool-chip")).to_have_attribute("data-state", "done")
    sidebar = page.get_by_test_id("sidebar")
    toggle = page.get_by_test_id("sidebar-toggle")
    await expect(toggle).to_be_visible()
    await expect(sidebar).not_to_be_in_viewport()
    await expect(toggle).to_have_attribute("aria-expanded", "false")
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await page.screenshot(path=str(artifacts_dir / "chat-mobile.png"))

    await toggle.click()
    await expect(toggle).to_have_attribute("aria-expanded", "true")
    await expect(sidebar).to_be_in_viewport(ratio=1)  # fully slid in
    await expect(page.get_by_test_id("new-chat")).to_be_focused()
    await page.screenshot(path=str(artifacts_dir / "chat-mobile-sidebar.png"))
    await page.keyboard.press("Escape")
    await expect(sidebar).not_to_be_in_viewport()
    await expect(toggle).to_be_focused()

    await toggle.click()
    await page.get_by_test_id("new-chat").click()
    await expect(sidebar).not_to_be_in_viewport()
    await expect(page.get_by_test_id("empty-state")).to_be_visible()
    await toggle.click()
    await page.get_by_test_id("conversation-link").click()
    await expect(sidebar).not_to_be_in_viewport()
    await expect(page.get_by_test_id("chat-title")).to_have_text("Remind me to call the plumber")
