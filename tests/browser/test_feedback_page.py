"""Thumbs up and down on replies in the page (stored, shown again after a reload, toggled off), and the generated
title replacing the first-message title in the sidebar."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import expect

from tests.browser.conftest import ChatServer
from tests.browser.test_chat_page import ASSISTANT, USER, ask, conversation_id_of, get_json
from tests.fakes.gemini import text_turn

pytestmark = [
    pytest.mark.browser,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.filterwarnings("ignore:.*ReadOnly.*qualifier:UserWarning"),
]


async def stored_feedback(server: ChatServer, conversation_id: str) -> Any:
    status, detail = await get_json(server.url, f"/api/conversations/{conversation_id}")
    assert status == 200
    return [message["feedback"] for message in detail["messages"]]


async def test_feedback_buttons_rate_a_reply_and_survive_a_reload(server: ChatServer, new_page: Any) -> None:
    server.fake.script(text_turn(["A fine ", "answer."]))
    page, _ = await new_page()
    reply = await ask(page, server.url, "hello")
    conversation_id = conversation_id_of(page)
    up, down = reply.get_by_test_id("feedback-up"), reply.get_by_test_id("feedback-down")
    await expect(up).to_have_attribute("aria-pressed", "false")
    await expect(down).to_have_attribute("aria-pressed", "false")
    await expect(page.locator(USER).get_by_test_id("feedback")).to_have_count(0)  # user messages have none

    await down.click()
    await expect(down).to_have_attribute("aria-pressed", "true")
    await expect(reply.get_by_test_id("feedback")).not_to_have_attribute("aria-busy", "true")
    (user_feedback, reply_feedback) = await stored_feedback(server, conversation_id)
    assert user_feedback is None and reply_feedback["rating"] == "down"

    await page.reload()
    reply = page.locator(ASSISTANT).last
    up, down = reply.get_by_test_id("feedback-up"), reply.get_by_test_id("feedback-down")
    await expect(down).to_have_attribute("aria-pressed", "true")
    await up.click()
    await expect(up).to_have_attribute("aria-pressed", "true")
    await expect(down).to_have_attribute("aria-pressed", "false")
    await expect(reply.get_by_test_id("feedback")).not_to_have_attribute("aria-busy", "true")
    assert (await stored_feedback(server, conversation_id))[1]["rating"] == "up"

    await up.click()  # the pressed button again: no rating
    await expect(up).to_have_attribute("aria-pressed", "false")
    await expect(reply.get_by_test_id("feedback")).not_to_have_attribute("aria-busy", "true")
    assert await stored_feedback(server, conversation_id) == [None, None]


async def test_a_generated_title_replaces_the_first_message_title_in_the_sidebar(
    start_server: Any, new_page: Any
) -> None:
    server = await start_server(titles=True)
    server.fake.script_unary(text_turn("Shopping Plans"))
    server.fake.script(text_turn(["Here ", "is ", "a ", "plan."], first_delay=3.0))  # the title comes first
    page, _ = await new_page()
    await ask(page, server.url, "plan my shopping for the week")
    item = page.get_by_test_id("conversation-item")
    await expect(item.get_by_test_id("conversation-item-title")).to_have_text("Shopping Plans")
    await expect(page.get_by_test_id("chat-title")).to_have_text("Shopping Plans")
    await page.reload()  # stored: the list after a reload has it too
    await expect(page.get_by_test_id("conversation-item").get_by_test_id("conversation-item-title")).to_have_text(
        "Shopping Plans"
    )
