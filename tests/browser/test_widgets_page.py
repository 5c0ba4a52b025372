"""The page's widget renderer (widgets.js), Markdown task lists, and the conversation-list race, in Chromium."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from playwright.async_api import expect

from backend.chat.widgets import is_safe_image_src, widget_json
from backend.models import Task
from backend.tasks.widgets import task_list_widget
from tests.browser.conftest import ChatServer, script_chatkit, sse
from tests.browser.test_chat_page import ASSISTANT, USER, ask, assistant_text, send, wait_until_finished
from tests.chat.test_widgets import EVERY_COMPONENT, PNG
from tests.fakes.gemini import text_turn

pytestmark = [
    pytest.mark.browser,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.filterwarnings("ignore:.*ReadOnly.*qualifier:UserWarning"),
]

# Renders `widget` into a fresh box in the page; actions are recorded in window.actions. When `reject` is set, the
# action promise rejects (a failed action), otherwise it resolves.
RENDER_JS = """async ({ widget, reject }) => {
  const { renderWidget } = await import("/static/widgets.js");
  window.actions = [];
  const box = document.createElement("div");
  box.id = "widget-box";
  document.body.replaceChildren(box);
  box.append(renderWidget(widget, (action, source) => {
    window.actions.push({ action, widgetId: source.widgetId });
    return reject ? Promise.reject(new Error("no")) : Promise.resolve();
  }));
  return box.querySelectorAll("*").length;
}"""

UNSAFE_SOURCES = ["javascript:alert(1)", "http://example.com/a.png", "data:image/svg+xml;base64,PHN2Zz4=", "/x.png"]


def sample(**changes: Any) -> dict[str, Any]:
    widget = json.loads(json.dumps(EVERY_COMPONENT))
    widget.update(changes)
    return widget


async def test_every_component_renders_with_roles_and_names(server: ChatServer, new_page: Any) -> None:
    page, probe = await new_page()
    await page.goto(server.url)
    unsafe = [{"type": "image", "src": src, "alt": f"unsafe {i}"} for i, src in enumerate(UNSAFE_SOURCES)]
    widget = sample()
    widget["children"].append({"type": "row", "children": unsafe})
    widget["children"].append({"type": "text", "value": "<img src=x onerror=alert(1)>"})
    widget["children"].append({"type": "marquee", "value": "unknown types are skipped"})
    await page.evaluate(RENDER_JS, {"widget": widget, "reject": False})

    box = page.locator("#widget-box")
    root = box.get_by_test_id("widget")
    await expect(root).to_have_attribute("data-widget-id", "sample")
    await expect(box.get_by_role("region", name="Sample")).to_be_visible()  # a titled card is a named section
    await expect(box.get_by_role("heading", name="Sample")).to_be_visible()
    await expect(box.get_by_text("Heading", exact=True)).to_have_class("w-text w-size-lg w-weight-bold w-tone-default")
    await expect(box.get_by_text("new", exact=True)).to_have_class("w-badge w-tone-success")
    await expect(box.get_by_role("separator")).to_have_count(1)
    await expect(box.get_by_role("img", name="A picture")).to_have_attribute("src", "https://example.com/a.png")
    await expect(box.locator(f'img[src="{PNG}"]')).to_have_count(1)
    await expect(box.locator("img")).to_have_count(2)  # none of the unsafe sources
    listing = box.get_by_role("list", name="Things")
    await expect(listing.get_by_role("listitem")).to_have_count(2)
    await expect(box.get_by_role("checkbox", name="two")).to_be_checked()
    await expect(box.get_by_role("button", name="Go")).to_be_enabled()
    await expect(box.get_by_text("<img src=x onerror=alert(1)>")).to_be_visible()  # text, not markup
    await expect(box.get_by_text("unknown types are skipped")).to_have_count(0)

    await box.get_by_role("button", name="Go").click()
    await box.get_by_role("checkbox", name="two").click()
    assert await page.evaluate("window.actions") == [
        {"action": {"type": "demo.go", "payload": {}}, "widgetId": "sample"},
        {"action": {"type": "demo.check", "payload": {"n": 2}}, "widgetId": "sample"},
    ]
    await expect(box.get_by_role("checkbox", name="two")).not_to_be_checked()  # the action succeeded
    assert probe.dialogs == []


async def test_failed_checkbox_action_reverts_and_update_replaces_by_id(server: ChatServer, new_page: Any) -> None:
    page, _ = await new_page()
    await page.goto(server.url)
    await page.evaluate(RENDER_JS, {"widget": sample(), "reject": True})
    box = page.locator("#widget-box")
    checkbox = box.get_by_role("checkbox", name="two")
    await checkbox.click()
    await expect(checkbox).to_be_checked()  # the action was rejected: back to the state the server knows
    await expect(box.get_by_test_id("widget")).not_to_have_attribute("aria-busy", "true")

    replaced = sample(title="Updated", children=[{"type": "text", "value": "fresh"}])
    other = sample(id="other")
    count = await page.evaluate(
        """async ([replaced, other]) => {
          const { renderWidget, updateWidget } = await import("/static/widgets.js");
          const box = document.getElementById("widget-box");
          box.append(renderWidget(other, () => {}));
          return updateWidget(box, replaced).length + updateWidget(box, { ...replaced, id: "missing" }).length;
        }""",
        [replaced, other],
    )
    assert count == 1
    await expect(box.get_by_test_id("widget")).to_have_count(2)
    await expect(box.get_by_test_id("widget").first).to_have_attribute("data-widget-id", "sample")
    await expect(box.get_by_role("heading", name="Updated")).to_be_visible()
    await expect(box.get_by_text("fresh")).to_be_visible()
    await expect(box.get_by_role("heading", name="Sample")).to_have_count(1)  # the other widget is untouched
    await expect(box.get_by_role("checkbox", name="two")).to_have_count(1)


@pytest.mark.parametrize(
    ("scheme", "card_bg", "text_color"),
    [("light", "rgb(247, 247, 248)", "rgb(31, 35, 48)"), ("dark", "rgb(30, 31, 36)", "rgb(231, 232, 236)")],
)
async def test_widgets_follow_the_theme(
    server: ChatServer, new_page: Any, scheme: str, card_bg: str, text_color: str
) -> None:
    page, _ = await new_page()
    await page.emulate_media(color_scheme=scheme)
    await page.goto(server.url)
    await page.evaluate(RENDER_JS, {"widget": sample(), "reject": False})
    colors = await page.evaluate(
        """() => {
          const card = document.querySelector(".w-card");
          const text = document.querySelector(".w-text");
          return [getComputedStyle(card).backgroundColor, getComputedStyle(text).color];
        }"""
    )
    assert colors == [card_bg, text_color]


async def test_markdown_task_lists_render_as_disabled_checkboxes(server: ChatServer, new_page: Any) -> None:
    server.fake.script(text_turn("Your list:\n\n- [x] buy milk\n- [ ] call **mum**\n- plain item\n1. [X] first\n"))
    page, _ = await new_page()
    await page.goto(server.url)
    await send(page, "show my list")
    await wait_until_finished(page)
    message = page.locator('[data-testid="message-text"]').last
    boxes = message.get_by_role("checkbox")
    await expect(boxes).to_have_count(3)
    for index, checked in enumerate([True, False, True]):
        await expect(boxes.nth(index)).to_be_disabled()
        if checked:
            await expect(boxes.nth(index)).to_be_checked()
        else:
            await expect(boxes.nth(index)).not_to_be_checked()
    await expect(message.locator("li.task-item")).to_have_count(3)
    await expect(message.locator("li.task-item").nth(1).locator("strong")).to_have_text("mum")
    assert "[x]" not in await assistant_text(page) and "plain item" in await assistant_text(page)
    await expect(message.locator("li").nth(2)).not_to_have_class("task-item")


async def test_stale_list_answer_does_not_wipe_a_conversation_just_started(server: ChatServer, new_page: Any) -> None:
    """The list request of page load is answered (empty) before the first message, but arrives after `start`."""
    server.fake.script(text_turn("Hello."))
    page, _ = await new_page()
    release = asyncio.Event()
    held: list[Any] = []

    async def hold_first_list(route: Any) -> None:
        if held:
            await route.continue_()
            return
        response = await route.fetch()  # the list as it is now: empty
        held.append(response)
        await release.wait()
        await route.fulfill(response=response)

    await page.route("**/api/conversations?*", hold_first_list)
    await page.goto(server.url)
    await send(page, "hello there")
    await wait_until_finished(page)
    await expect(page.locator(USER)).to_have_count(1)
    await expect(page.get_by_test_id("conversation-item")).to_have_count(1)
    assert held and json.loads(await held[0].text())["data"] == []

    release.set()
    # Wait until the stale answer has been applied (the list stops loading), then check nothing was wiped.
    await page.wait_for_function("() => !document.getElementById('load-more').disabled")
    await expect(page.get_by_test_id("conversation-item")).to_have_count(1)
    await expect(page.get_by_test_id("conversation-item-title")).to_have_text("hello there")
    await expect(page.get_by_test_id("conversations-empty")).to_be_hidden()


async def test_page_and_server_agree_on_safe_image_sources(server: ChatServer, new_page: Any) -> None:
    sources = [*UNSAFE_SOURCES, "https://example.com/a.png", PNG, "HTTPS://EXAMPLE.COM/A.PNG", "https:///x.png"]
    sources += ["data:image/png;base64,@@", "https://example.com/a b.png", "data:image/gif;charset=x;base64,R0lG"]
    page, _ = await new_page()
    await page.goto(server.url)
    in_page = await page.evaluate(
        """async (sources) => {
          const { isSafeImageSrc } = await import("/static/widgets.js");
          return sources.map(isSafeImageSrc);
        }""",
        sources,
    )
    assert in_page == [is_safe_image_src(src) for src in sources]
    assert in_page.count(True) == 4


async def test_widget_event_renders_in_the_reply_and_its_checkbox_posts_the_action(
    server: ChatServer, new_page: Any
) -> None:
    """The page's side of the protocol, with /chatkit answered by the test: `widget` events and the action request."""
    milk = Task(user_id="local", title="buy milk")
    before = task_list_widget([milk])
    after = task_list_widget([Task(id=milk.id, user_id="local", title="buy milk", completed=True)])
    ids = {"conversation_id": str(uuid.uuid4()), "message_id": str(uuid.uuid4())}
    done = {"type": "done", **ids, "finish_reason": "stop", "usage": {}}
    answers = [
        sse(
            {"type": "start", **ids, "title": "list my tasks"},
            {"type": "text", "content": "Here they are:"},
            {"type": "widget", "id": before.id, "widget": widget_json(before)},
            done,
        ),
        sse(
            {"type": "widget", "id": after.id, "widget": widget_json(after)},
            {"type": "text", "content": "Completed “buy milk”."},
            done,
        ),
    ]
    page, _ = await new_page()
    bodies = await script_chatkit(page, answers)
    await ask(page, server.url, "list my tasks")
    reply = page.locator(ASSISTANT).first
    checkbox = reply.get_by_role("checkbox", name="buy milk")
    await expect(checkbox).not_to_be_checked()
    await expect(reply.get_by_role("list", name="Tasks")).to_be_visible()
    assert await assistant_text(page) == "Here they are:"

    await checkbox.click()
    await expect(reply.get_by_role("checkbox", name="buy milk")).to_be_checked()
    await expect(reply.get_by_test_id("widget")).to_have_count(1)  # replaced, not added
    await expect(reply.get_by_text("0 open, 1 done")).to_be_visible()
    await expect(page.locator("#status")).to_have_text("Completed “buy milk”.")
    assert await assistant_text(page) == "Completed “buy milk”."  # the action's reply is a new message, as stored
    assert bodies[1] == {
        "thread_id": ids["conversation_id"],
        "action": {"type": "tasks.toggle", "payload": {"task_id": str(milk.id), "completed": True}},
    }
