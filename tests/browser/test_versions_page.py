"""Versions in the page: Regenerate the last reply, Edit a user message, the "2 / 3" control across a reload."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import expect

from tests.browser.conftest import ChatServer
from tests.browser.test_chat_page import (
    ASSISTANT,
    USER,
    ask,
    assistant_text,
    conversation_id_of,
    get_json,
    send,
    wait_until_finished,
)
from tests.fakes.gemini import said, text_turn

pytestmark = [
    pytest.mark.browser,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.filterwarnings("ignore:.*ReadOnly.*qualifier:UserWarning"),
]


async def shown(page: Any) -> list[str]:
    """The texts of the messages shown, in order (user bubbles and reply texts)."""
    return await page.evaluate(
        """() => [...document.querySelectorAll('[data-testid="message"]')].map((m) =>
            m.dataset.role === 'user'
              ? m.querySelector('[data-testid="message-text"]').textContent
              : [...m.querySelectorAll('[data-testid="message-body"] [data-testid="message-text"]')]
                  .map((n) => n.textContent).join(''))"""
    )


async def test_regenerate_edit_and_versions_survive_a_reload(server: ChatServer, new_page: Any) -> None:
    page, _ = await new_page()
    server.fake.script(text_turn("First answer."), text_turn("Second answer."))
    await ask(page, server.url, "question one")
    cid = conversation_id_of(page)

    # Regenerate on the last reply (it appears once the reply is stored): a second version, "2 / 2".
    last = page.locator(ASSISTANT).last
    await last.get_by_test_id("regenerate").click()
    await wait_until_finished(page)
    await expect(page.locator(ASSISTANT).last.get_by_test_id("version-label")).to_have_text("2 / 2")
    assert await assistant_text(page) == "Second answer."
    assert said(server.fake.requests[-1]) == ["user: question one"], "the old reply is not replayed"
    await expect(page.locator(ASSISTANT)).to_have_count(1)

    # Edit the user message: a new version of it, and the reply follows it.
    server.fake.script(text_turn("Edited answer."))
    user = page.locator(USER).first
    await user.get_by_test_id("edit-message").click()
    await page.get_by_test_id("edit-input").fill("question one, edited")
    await page.get_by_test_id("edit-save").click()
    await wait_until_finished(page)
    await expect(page.locator(USER).first.get_by_test_id("version-label")).to_have_text("2 / 2")
    assert await shown(page) == ["question one, edited", "Edited answer."]
    assert said(server.fake.requests[-1]) == ["user: question one, edited"]

    # Back to the first version of the question: its branch, with its newest reply.
    await page.locator(USER).first.get_by_test_id("version-previous").click()
    await expect(page.locator(USER).first.get_by_test_id("version-label")).to_have_text("1 / 2")
    assert await shown(page) == ["question one", "Second answer."]
    await expect(page.locator(ASSISTANT).last.get_by_test_id("version-label")).to_have_text("2 / 2")
    await page.locator(ASSISTANT).last.get_by_test_id("version-previous").click()
    await expect(page.locator(ASSISTANT).last.get_by_test_id("version-label")).to_have_text("1 / 2")
    assert await shown(page) == ["question one", "First answer."]

    # A reload keeps the branch, and the model goes on from it.
    await page.reload()
    await expect(page.locator(ASSISTANT).last.get_by_test_id("version-label")).to_have_text("1 / 2")
    assert await shown(page) == ["question one", "First answer."]
    _, detail = await get_json(server.url, f"/api/conversations/{cid}")
    assert [m["content"] for m in detail["messages"]] == ["question one", "First answer."]
    server.fake.script(text_turn("Follow-up answer."))
    await send(page, "follow up")
    await wait_until_finished(page)
    assert said(server.fake.requests[-1]) == ["user: question one", "model: First answer.", "user: follow up"]
    await expect(page.locator(ASSISTANT).last.get_by_test_id("regenerate")).to_be_visible()
    await expect(page.locator(ASSISTANT).first.get_by_test_id("regenerate")).to_have_count(0)
