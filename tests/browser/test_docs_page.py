"""The API docs page renders in Chromium with every request outside this server blocked (it works offline)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browser.conftest import ChatServer

pytestmark = [
    pytest.mark.browser,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(60),
]


async def test_swagger_ui_renders_the_typed_streams_offline(server: ChatServer, new_page: Any):
    page, _probe = await new_page()
    ours = urlsplit(server.url).netloc
    elsewhere: list[str] = []

    async def only_this_server(route: Any) -> None:
        if urlsplit(route.request.url).netloc == ours:
            await route.continue_()
        else:
            elsewhere.append(route.request.url)
            await route.abort()

    await page.route("**/*", only_this_server)
    await page.goto(f"{server.url}/schema/swagger")
    await page.locator(".opblock-summary-path", has_text="/chatkit/{message_id}/stream").first.wait_for()
    assert await page.locator(".opblock").count() >= 15
    await page.locator(".models-control, .models h4").first.wait_for()
    assert "StartEvent" in await page.content() or await page.locator("text=StartEvent").count() > 0
    assert elsewhere == [], "the page asked another host"
