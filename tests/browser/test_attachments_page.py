"""The page's attachments: attach button, paste, drag and drop, progress, a refused type, removal, and the sent body."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import expect

from tests import files_samples as samples
from tests.browser.conftest import ChatServer
from tests.fakes.gemini import text_turn

pytestmark = [
    pytest.mark.browser,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.filterwarnings("ignore:.*ReadOnly.*qualifier:UserWarning"),
]

PENDING = '[data-testid="attachment-pending"]'
USER = '[data-testid="message"][data-role="user"]'

DISPATCH_JS = """([kind, name, type, b64]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const data = new DataTransfer();
  data.items.add(new File([bytes], name, { type }));
  if (kind === "paste") {
    document.getElementById("composer-input").dispatchEvent(
      new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true }));
  } else {
    document.getElementById("composer").dispatchEvent(
      new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));
  }
}"""


async def expect_sent_attachments(page: Any) -> None:
    """The last user message shows the two pictures as decoded thumbnails and the CSV as a named chip."""
    sent = page.locator(USER).last.get_by_test_id("message-attachment")
    await expect(sent).to_have_count(3)
    thumbnails = page.locator(USER).last.locator(".attachment-thumb img")
    await expect(thumbnails).to_have_count(2)
    for index in range(2):
        await expect(thumbnails.nth(index)).to_have_attribute("src", re.compile(r"^blob:"))
        assert await thumbnails.nth(index).evaluate("(img) => img.decode().then(() => img.naturalWidth)") == 2
    await expect(sent.nth(2)).to_contain_text("table.csv")


def chip(page: Any, name: str) -> Any:
    return page.locator(PENDING).filter(has=page.get_by_test_id("attachment-name").get_by_text(name, exact=True))


async def test_attach_paste_drop_refuse_remove_and_send(server: ChatServer, new_page: Any, artifacts_dir: Path) -> None:
    page, _ = await new_page()
    await page.goto(server.url)
    picker = page.get_by_test_id("attach-input")

    async with page.expect_response("**/api/files") as uploaded:
        await picker.set_input_files({"name": "chart.png", "mimeType": "image/png", "buffer": samples.png()})
    png_id = (await (await uploaded.value).json())["id"]
    await expect(chip(page, "chart.png")).to_have_attribute("data-state", "ready")

    await picker.set_input_files({"name": "evil.svg", "mimeType": "image/svg+xml", "buffer": samples.SVG})
    refused = chip(page, "evil.svg")
    await expect(refused).to_have_attribute("data-state", "error")
    await expect(refused.get_by_role("alert")).to_contain_text("Not attached: Only PNG, JPEG, WebP and GIF images")

    async with page.expect_response("**/api/files") as uploaded:
        await picker.set_input_files({"name": "drop-me.txt", "mimeType": "text/plain", "buffer": samples.TEXT})
    unwanted_id = (await (await uploaded.value).json())["id"]
    await expect(chip(page, "drop-me.txt")).to_have_attribute("data-state", "ready")

    async with page.expect_response("**/api/files") as uploaded:
        await page.evaluate(DISPATCH_JS, ["paste", "image.png", "image/png", base64.b64encode(samples.png()).decode()])
    pasted_id = (await (await uploaded.value).json())["id"]
    await expect(chip(page, "pasted-1.png")).to_have_attribute("data-state", "ready")

    async with page.expect_response("**/api/files") as uploaded:
        await page.evaluate(DISPATCH_JS, ["drop", "table.csv", "text/csv", base64.b64encode(samples.CSV).decode()])
    csv_id = (await (await uploaded.value).json())["id"]
    await expect(chip(page, "table.csv")).to_have_attribute("data-state", "ready")

    await page.screenshot(path=artifacts_dir / "attachments-tray.png")
    await refused.get_by_test_id("attachment-remove").click()
    async with page.expect_response(lambda r: r.request.method == "DELETE"):
        await chip(page, "drop-me.txt").get_by_test_id("attachment-remove").click()
    await expect(page.locator(PENDING)).to_have_count(3)
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get(f"/api/files/{unwanted_id}")).status_code == 404
        assert (await http.get(f"/api/files/{png_id}")).status_code == 200

    server.fake.script(text_turn("Got them."))
    box = page.get_by_test_id("composer-input")
    await box.fill("what do you see?")
    async with page.expect_request("**/chatkit") as posted:
        await box.press("Enter")
    body = json.loads((await posted.value).post_data or "{}")
    assert body["message"] == "what do you see?"
    assert body["attachments"] == [png_id, pasted_id, csv_id]

    await expect(page.locator(PENDING)).to_have_count(0)
    await expect(page.get_by_test_id("attachment-tray")).to_be_hidden()
    await expect_sent_attachments(page)
    await page.screenshot(path=artifacts_dir / "attachments-sent.png")
    await expect(page.get_by_test_id("stop-button")).to_be_hidden()

    # The model received the images as inline data and the CSV as text.
    (request,) = server.fake.requests[-1:]
    parts = [part for content in request["contents"] if content["role"] == "user" for part in content["parts"]]
    assert [part["inline_data"]["mime_type"] for part in parts if "inline_data" in part] == ["image/png", "image/png"]
    assert any(part.get("text", "").startswith("Attached file table.csv (text/csv") for part in parts)

    # After a reload the stored message shows the same thumbnails and chip, from the conversation API.
    await page.reload()
    await expect_sent_attachments(page)
    await page.screenshot(path=artifacts_dir / "attachments-reloaded.png")
