"""The sidebar's search box in real Chromium: results with highlighted snippets, text never read as HTML, clearing."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import expect

from backend.db import create_database
from tests.browser.conftest import ChatServer
from tests.seeding import seed_conversation

pytestmark = [
    pytest.mark.browser,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.filterwarnings("ignore:.*ReadOnly.*qualifier:UserWarning"),
]

XSS = "<img src=x onerror=alert(1)>"


async def test_search_box_lists_matches_with_snippets_and_clears(server: ChatServer, new_page: Any) -> None:
    database = create_database(server.settings)
    try:
        await seed_conversation(database, title="Groceries", messages=[{"content": "milk, bread and eggs"}])
        crepes = await seed_conversation(
            database,
            title="Recipes",
            messages=[{"content": f"Weekend plans. The Crêpes need {XSS} butter and a hot pan; serve warm."}],
        )
        await seed_conversation(database, title="Crepe night", messages=[{"content": "Friday"}])
    finally:
        await database.dispose()
    page, probe = await new_page()
    await page.goto(server.url)
    titles = page.get_by_test_id("conversation-item-title")
    await expect(titles).to_have_count(3)

    box = page.get_by_test_id("conversation-search")
    await box.fill("crepes butter")
    await expect(titles).to_have_text(["Recipes"])
    item = page.locator(f'[data-testid="conversation-item"][data-id="{crepes}"]')
    snippet = item.get_by_test_id("conversation-snippet")
    await expect(snippet).to_contain_text(f"The Crêpes need {XSS} butter")
    await expect(snippet.locator("mark")).to_have_text(["Crêpes", "butter"])
    await expect(snippet.locator("img")).to_have_count(0)  # the user's text stays text

    await box.fill("crepe")  # accents do not count; whole words only
    await expect(titles).to_have_text(["Crepe night"])
    await box.fill("nothing like this")
    await expect(titles).to_have_count(0)
    await expect(page.get_by_test_id("conversations-empty")).to_have_text("No conversation matches.")

    await box.press("Escape")
    await expect(box).to_have_value("")
    await expect(titles).to_have_count(3)
    await expect(page.get_by_test_id("conversation-snippet")).to_have_count(0)
    assert probe.dialogs == []
