"""ChatKit's wire (`POST /api/chatkit`): every request type, every frame and JSON answer checked with `openai-chatkit`'s
own pydantic types (`tests/protocols/chatkit_wire.py`). Real uvicorn, the fake Gemini, both databases.

The differential test against the official `ChatKitServer` is `test_chatkit_differential.py`.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from backend.settings import Settings
from tests.conftest import SECRET, bearer, live
from tests.fakes.gemini import FakeGemini, error_turn, function_call_turn, handoff_turn, text_turn
from tests.protocols.chatkit_wire import REQUEST, Answer, check, post, send

pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("ignore::DeprecationWarning")]
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
ALICE = bearer("alice")
BOB = bearer("bob")


@pytest.fixture
async def client(gemini_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    async with live(gemini_settings(auth_secret=SECRET)) as http:
        yield http


def user_input(text: str, attachments: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "content": [{"type": "input_text", "text": text}],
        "attachments": list(attachments),
        "inference_options": {},
    }


async def create(client: httpx.AsyncClient, text: str, headers: dict[str, str] = ALICE) -> tuple[str, Answer]:
    answer = await post(client, "threads.create", {"input": user_input(text)}, headers=headers)
    assert answer.status == 200, answer.body
    return answer.events[0]["thread"]["id"], answer


async def items_of(client: httpx.AsyncClient, thread_id: str, headers: dict[str, str] = ALICE) -> list[dict[str, Any]]:
    answer = await post(client, "items.list", {"thread_id": thread_id, "order": "asc", "limit": 100}, headers=headers)
    assert answer.status == 200, answer.body
    return answer.body["data"]


def text_of(item: dict[str, Any]) -> str:
    return "".join(part["text"] for part in item["content"])


async def test_a_new_thread_streams_its_user_message_and_the_reply(client: httpx.AsyncClient, fake: FakeGemini):
    fake.script(text_turn(["Hel", "lo ", "there"]))
    thread_id, answer = await create(client, "hi")
    assert answer.types == [
        "thread.created",
        "thread.item.done",  # the user message
        "stream_options",
        "thread.item.added",
        "thread.item.updated",  # content_part.added
        "thread.item.updated",
        "thread.item.updated",
        "thread.item.updated",  # three text deltas
        "thread.item.done",
    ]
    assert answer.events[0]["thread"]["title"] == "hi"
    assert answer.events[2]["stream_options"] == {"allow_cancel": False}
    assert answer.text == "Hello there"
    user, reply = answer.items_done()
    assert (user["type"], user["content"]) == ("user_message", [{"type": "input_text", "text": "hi"}])
    assert (reply["type"], text_of(reply)) == ("assistant_message", "Hello there")
    # What a reload shows is what streamed: the same ids, the same content.
    assert await items_of(client, thread_id) == [
        {**user, "created_at": (await items_of(client, thread_id))[0]["created_at"]},
        {**reply, "created_at": (await items_of(client, thread_id))[1]["created_at"]},
    ]


async def test_tools_handoffs_and_widgets_become_a_workflow_and_a_chatkit_widget(
    client: httpx.AsyncClient, fake: FakeGemini
):
    created = await client.post("/api/tasks", json={"title": "buy milk"}, headers=ALICE)
    assert created.status_code == 201, created.text
    fake.script(handoff_turn(), function_call_turn("list_tasks", {}), text_turn("One task."))
    thread_id, answer = await create(client, "list my tasks")
    done = {item["id"]: item for item in answer.items_done()}
    stored = await items_of(client, thread_id)
    assert [i["type"] for i in stored] == ["user_message", "workflow", "widget", "assistant_message"]
    workflow, widget = stored[1], stored[2]
    titles = [task["title"] for task in workflow["workflow"]["tasks"]]
    assert titles == ["Task assistant is answering", "list_tasks"]
    assert all(task["status_indicator"] == "complete" for task in workflow["workflow"]["tasks"])
    assert done[workflow["id"]]["workflow"] == workflow["workflow"]  # the streamed workflow ends as stored
    root = widget["widget"]
    assert root["type"] == "ListView" or root["type"] == "Card"
    checkbox = _find(root, "Checkbox")
    assert checkbox["label"] == "buy milk" and checkbox["onChangeAction"]["type"] == "tasks.toggle"
    assert done[widget["id"]]["widget"] == root

    # The checkbox's action comes back as threads.custom_action: the widget is replaced in place.
    action = {"type": "tasks.toggle", "payload": checkbox["onChangeAction"]["payload"]}
    toggled = await post(
        client,
        "threads.custom_action",
        {
            "thread_id": thread_id,
            "item_id": widget["id"],
            "action": {**action, "payload": {**action["payload"], "completed": True}},
        },
        headers=ALICE,
    )
    assert toggled.status == 200
    replaced = toggled.of("thread.item.replaced")
    assert [e["item"]["id"] for e in replaced] == [widget["id"]]
    assert _find(replaced[0]["item"]["widget"], "Checkbox")["defaultChecked"] is True
    again = await items_of(client, thread_id)
    assert _find(again[2]["widget"], "Checkbox")["defaultChecked"] is True


def _find(node: dict[str, Any], kind: str) -> dict[str, Any]:
    if node.get("type") == kind:
        return node
    for child in node.get("children") or []:
        found = _find(child, kind) if isinstance(child, dict) else None
        if found:
            return found
    return {}


async def test_an_approval_is_a_card_answered_by_custom_action(client: httpx.AsyncClient, fake: FakeGemini):
    await client.post("/api/tasks", json={"title": "milk"}, headers=ALICE)
    fake.script(handoff_turn(), function_call_turn("delete_task", {"task": "milk"}))
    thread_id, answer = await create(client, "delete milk")
    card_item = answer.items_done()[-1]
    card = card_item["widget"]
    assert card["confirm"]["label"] == "Approve" and card["cancel"]["label"] == "Reject"
    payload = card["confirm"]["action"]["payload"]
    assert len(payload["ids"]) == 1

    fake.script(text_turn("Deleted."))
    approved = await post(
        client,
        "threads.custom_action",
        {
            "thread_id": thread_id,
            "item_id": card_item["id"],
            "action": {"type": "approval.approve", "payload": payload},
        },
        headers=ALICE,
    )
    assert approved.status == 200, approved.body
    assert approved.types[:2] == ["stream_options", "thread.item.replaced"]
    decided = approved.events[1]["item"]
    assert decided["id"] == card_item["id"] and "confirm" not in decided["widget"]
    assert approved.text == "Deleted."
    stored = await items_of(client, thread_id)
    assert stored[-2]["widget"] == decided["widget"]  # the decision stays shown after a reload
    assert text_of(stored[-1]) == "Deleted."
    tasks = (await client.get("/api/tasks", headers=ALICE)).json()
    assert tasks["data"] == []

    # Answering again: nothing waits any more, in ChatKit's error shape.
    late = await post(
        client,
        "threads.custom_action",
        {"thread_id": thread_id, "item_id": card_item["id"], "action": {"type": "approval.reject", "payload": payload}},
        headers=ALICE,
    )
    assert late.status == 409 and late.body["type"] == "error"


async def test_a_client_tool_call_is_answered_with_add_client_tool_output(client: httpx.AsyncClient, fake: FakeGemini):
    fake.script(handoff_turn(), function_call_turn("set_theme", {"theme": "dark"}))
    thread_id, answer = await create(client, "dark mode")
    call = answer.items_done()[-1]
    assert (call["type"], call["status"], call["name"], call["arguments"]) == (
        "client_tool_call",
        "pending",
        "set_theme",
        {"theme": "dark"},
    )
    fake.script(text_turn("Dark it is."))
    output = await post(
        client, "threads.add_client_tool_output", {"thread_id": thread_id, "result": {"theme": "dark"}}, headers=ALICE
    )
    assert output.status == 200, output.body
    assert output.text == "Dark it is."
    stored = await items_of(client, thread_id)
    assert stored[-2]["type"] == "client_tool_call" and stored[-2]["status"] == "completed"
    assert stored[-2]["id"] == call["id"]
    nothing = await post(
        client, "threads.add_client_tool_output", {"thread_id": thread_id, "result": {}}, headers=ALICE
    )
    assert nothing.status == 409


async def test_threads_get_list_update_delete_and_items_pages(client: httpx.AsyncClient, fake: FakeGemini):
    fake.script(text_turn("One."), text_turn("Two."), text_turn("Three."))
    first, _ = await create(client, "first")
    second, _ = await create(client, "second")
    more = await post(
        client, "threads.add_user_message", {"thread_id": second, "input": user_input("more")}, headers=ALICE
    )
    assert more.types[0] == "thread.item.done" and more.text == "Three."

    thread = await post(client, "threads.get_by_id", {"thread_id": second}, headers=ALICE)
    assert [i["type"] for i in thread.body["items"]["data"]] == ["user_message", "assistant_message"] * 2
    listed = await post(client, "threads.list", {"limit": 1}, headers=ALICE)
    assert [t["id"] for t in listed.body["data"]] == [second] and listed.body["has_more"] is True
    rest = await post(client, "threads.list", {"limit": 1, "after": listed.body["after"]}, headers=ALICE)
    assert [t["id"] for t in rest.body["data"]] == [first] and rest.body["has_more"] is False

    newest = await post(client, "items.list", {"thread_id": second, "limit": 3}, headers=ALICE)
    assert [
        text_of(i) if i["type"] == "assistant_message" else i["content"][0]["text"] for i in newest.body["data"]
    ] == [
        "Three.",
        "more",
        "Two.",
    ]
    older = await post(
        client, "items.list", {"thread_id": second, "limit": 3, "after": newest.body["after"]}, headers=ALICE
    )
    assert len(older.body["data"]) == 1 and older.body["has_more"] is False

    renamed = await post(client, "threads.update", {"thread_id": second, "title": "  Renamed  "}, headers=ALICE)
    assert renamed.body["title"] == "Renamed"
    empty = await post(client, "threads.update", {"thread_id": second, "title": "   "}, headers=ALICE)
    assert empty.status == 422
    deleted = await post(client, "threads.delete", {"thread_id": first}, headers=ALICE)
    assert deleted.status == 200
    gone = await post(client, "threads.get_by_id", {"thread_id": first}, headers=ALICE)
    assert gone.status == 404 and gone.body["error"]["code"] == "not_found"


async def test_another_users_threads_items_and_attachments_are_404(client: httpx.AsyncClient, fake: FakeGemini):
    fake.script(text_turn("Mine."))
    thread_id, answer = await create(client, "mine")
    upload = await _upload(client, ALICE)
    item_id = answer.items_done()[-1]["id"]
    requests: list[tuple[str, dict[str, Any]]] = [
        ("threads.get_by_id", {"thread_id": thread_id}),
        ("threads.update", {"thread_id": thread_id, "title": "x"}),
        ("threads.delete", {"thread_id": thread_id}),
        ("items.list", {"thread_id": thread_id}),
        ("threads.add_user_message", {"thread_id": thread_id, "input": user_input("hi")}),
        ("threads.add_client_tool_output", {"thread_id": thread_id, "result": {}}),
        ("threads.retry_after_item", {"thread_id": thread_id, "item_id": item_id}),
        ("threads.custom_action", {"thread_id": thread_id, "action": {"type": "tasks.toggle", "payload": {}}}),
        ("attachments.delete", {"attachment_id": upload}),
        ("threads.create", {"input": user_input("with yours", (upload,))}),
    ]
    for kind, params in requests:
        answer = await post(client, kind, params, headers=BOB)
        assert answer.status == 404, (kind, answer.status, answer.body)
    assert (await post(client, "threads.get_by_id", {"thread_id": thread_id}, headers=ALICE)).status == 200


async def _upload(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    """ChatKit's two-phase upload: `attachments.create`, then the bytes to its upload descriptor."""
    created = await post(
        client, "attachments.create", {"name": "dot.png", "size": len(PNG), "mime_type": "image/png"}, headers=headers
    )
    assert created.status == 200, created.body
    descriptor = created.body["upload_descriptor"]
    assert descriptor["method"] == "POST"
    stored = await client.post(descriptor["url"], files={"file": ("dot.png", PNG, "image/png")}, headers=headers)
    assert stored.status_code == 201, stored.text
    assert stored.json()["id"] == created.body["id"]
    return str(created.body["id"])


async def test_attachments_upload_in_two_phases_and_go_with_a_message(client: httpx.AsyncClient, fake: FakeGemini):
    file_id = await _upload(client, ALICE)
    twice = await client.post(f"/api/files?id={file_id}", files={"file": ("dot.png", PNG, "image/png")}, headers=ALICE)
    assert twice.status_code == 409
    fake.script(text_turn("A dot."))
    thread_id, answer = await create(client, "what is this", headers=ALICE)
    assert answer.status == 200
    fake.script(text_turn("Still a dot."))
    sent = await post(
        client,
        "threads.add_user_message",
        {"thread_id": thread_id, "input": user_input("and this?", (file_id,))},
        headers=ALICE,
    )
    attachment = sent.items_done()[0]["attachments"][0]
    assert (attachment["id"], attachment["type"], attachment["name"]) == (file_id, "image", "dot.png")
    stored = await items_of(client, thread_id)
    assert stored[2]["attachments"] == [attachment]
    too_big = await post(
        client, "attachments.create", {"name": "big.pdf", "size": 10**12, "mime_type": "application/pdf"}, headers=ALICE
    )
    assert too_big.status == 413
    assert (await post(client, "attachments.delete", {"attachment_id": file_id}, headers=ALICE)).status == 200
    assert (await post(client, "attachments.delete", {"attachment_id": file_id}, headers=ALICE)).status == 404


async def test_retry_after_item_answers_that_user_message_again(client: httpx.AsyncClient, fake: FakeGemini):
    fake.script(text_turn("First try."), text_turn("Later."), text_turn("Second try."))
    thread_id, answer = await create(client, "hello")
    user = answer.items_done()[0]
    more = await post(
        client, "threads.add_user_message", {"thread_id": thread_id, "input": user_input("more")}, headers=ALICE
    )
    assert more.text == "Later."
    retried = await post(
        client, "threads.retry_after_item", {"thread_id": thread_id, "item_id": user["id"]}, headers=ALICE
    )
    assert retried.status == 200, retried.body
    assert retried.text == "Second try."
    # Like ChatKitServer, the thread now ends at the retried message's new reply (ours keeps the rest as a version).
    stored = await items_of(client, thread_id)
    assert [i["type"] for i in stored] == ["user_message", "assistant_message"]
    assert stored[0]["id"] == user["id"] and text_of(stored[1]) == "Second try."
    unknown = await post(client, "threads.retry_after_item", {"thread_id": thread_id, "item_id": "nope"}, headers=ALICE)
    assert unknown.status == 404


async def test_sync_custom_action_answers_the_updated_widget(client: httpx.AsyncClient, fake: FakeGemini):
    await client.post("/api/tasks", json={"title": "call mom"}, headers=ALICE)
    fake.script(handoff_turn(), function_call_turn("list_tasks", {}), text_turn("Here."))
    thread_id, _ = await create(client, "list")
    widget = next(i for i in await items_of(client, thread_id) if i["type"] == "widget")
    payload = _find(widget["widget"], "Checkbox")["onChangeAction"]["payload"]
    answer = await post(
        client,
        "threads.sync_custom_action",
        {
            "thread_id": thread_id,
            "item_id": widget["id"],
            "action": {"type": "tasks.toggle", "payload": {**payload, "completed": True}},
        },
        headers=ALICE,
    )
    assert answer.status == 200, answer.body
    assert answer.body["updated_item"]["id"] == widget["id"]
    assert _find(answer.body["updated_item"]["widget"], "Checkbox")["defaultChecked"] is True


async def test_unsupported_and_malformed_requests_answer_chatkits_error_shape_with_a_4xx(client: httpx.AsyncClient):
    transcribe = await post(
        client, "input.transcribe", {"audio_base64": "AAAA", "mime_type": "audio/webm"}, headers=ALICE
    )
    assert transcribe.status == 400 and "not supported" in transcribe.body["message"]
    assert transcribe.body["error"]["code"] == "unsupported_request"
    bodies: list[Any] = [
        "{not json",
        "[]",
        {"params": {}},
        {"type": "threads.nope", "params": {}},
        {"type": "threads.create", "params": {}},
        {"type": "threads.create", "params": {"input": {"content": [], "attachments": [], "inference_options": {}}}},
        {"type": "threads.get_by_id", "params": {"thread_id": "thr_abc"}},
        {"type": "threads.get_by_id", "params": {"thread_id": 5}},
        {"type": "items.list", "params": {"thread_id": "x", "limit": 0}},
        {"type": "threads.custom_action", "params": {"thread_id": "x", "action": {"type": "NOT VALID"}}},
        {"type": "attachments.delete", "params": {"attachment_id": "nope"}},
    ]
    for body in bodies:
        answer = await send(client, body, headers=ALICE)
        assert 400 <= answer.status < 500, (body, answer.status, answer.body)
        assert answer.body["type"] == "error", answer.body
    unauthenticated = await send(client, {"type": "threads.list", "params": {}})
    assert unauthenticated.status == 401


async def test_every_request_type_we_answer_is_one_of_chatkits(client: httpx.AsyncClient):
    """The request types ChatKit 1.6.5 defines: each is answered (streamed or JSON) or refused as unsupported."""
    from typing import get_args

    from chatkit.types import NonStreamingReq, StreamingReq

    from backend.protocols.chatkit.requests import JSON_ANSWERED, STREAMING, UNSUPPORTED

    theirs = {cls.model_fields["type"].default for cls in (*get_args(StreamingReq), *get_args(NonStreamingReq))}
    assert set(STREAMING) | set(JSON_ANSWERED) | set(UNSUPPORTED) == theirs
    assert "items.feedback" in JSON_ANSWERED
    check(REQUEST, {"type": "threads.list", "params": {}})


async def test_a_turn_survives_a_dropped_request_and_shows_in_progress_meanwhile(
    client: httpx.AsyncClient, fake: FakeGemini
):
    fake.script(text_turn(["one ", "two ", "three"], delay=0.6))
    answer = await post(client, "threads.create", {"input": user_input("slow")}, headers=ALICE, stop_after=6)
    thread_id = answer.events[0]["thread"]["id"]  # the client dropped the request after a few frames
    running = await post(client, "threads.get_by_id", {"thread_id": thread_id}, headers=ALICE)
    kinds = [i["type"] for i in running.body["items"]["data"]]
    assert kinds[0] == "user_message" and kinds[-1] == "task", kinds
    assert running.body["items"]["data"][-1]["task"]["status_indicator"] == "loading"
    for _ in range(100):
        stored = await items_of(client, thread_id)
        if stored[-1]["type"] == "assistant_message":
            break
        await asyncio.sleep(0.1)
    assert text_of(stored[-1]) == "one two three"


async def test_a_failed_turn_ends_the_stream_with_an_error_event_and_no_provider_text(
    gemini_settings: Callable[..., Settings], fake: FakeGemini
):
    fake.script(error_turn(400, "SECRET provider detail"))
    async with live(gemini_settings(auth_secret=SECRET, model_retries=0)) as client:
        _, answer = await create(client, "hi")
    assert answer.types[-1] == "error", answer.types
    error = answer.events[-1]
    assert error["code"] == "custom" and error["message"] and "SECRET" not in error["message"]


async def test_the_path_is_a_setting(gemini_settings: Callable[..., Settings]):
    async with live(gemini_settings(chatkit_path="/ck/v1")) as client:
        moved = await post(client, "threads.list", {}, path="/ck/v1")
        assert moved.status == 200 and moved.body == {"data": [], "has_more": False}
        old = await client.post("/api/chatkit", json={"type": "threads.list", "params": {}})
        assert old.status_code in (404, 405)


async def test_items_feedback_rates_the_reply_and_shows_on_the_message(client: httpx.AsyncClient, fake: FakeGemini):
    fake.script(text_turn("Hello there."))
    thread_id, answer = await create(client, "hi")
    user, reply = answer.items_done()
    rated = await post(
        client, "items.feedback", {"thread_id": thread_id, "item_ids": [reply["id"]], "kind": "negative"}, headers=ALICE
    )
    assert (rated.status, rated.body) == (200, {})
    message_id = reply["id"].partition(".")[0]
    detail = (await client.get(f"/api/conversations/{thread_id}", headers=ALICE)).json()
    [stored] = [m for m in detail["messages"] if m["id"] == message_id]
    assert stored["feedback"]["rating"] == "down"

    again = await post(
        client, "items.feedback", {"thread_id": thread_id, "item_ids": [reply["id"]], "kind": "positive"}, headers=ALICE
    )
    assert again.status == 200
    detail = (await client.get(f"/api/conversations/{thread_id}", headers=ALICE)).json()
    assert [m["feedback"]["rating"] for m in detail["messages"] if m["id"] == message_id] == ["up"]

    stranger = await post(
        client, "items.feedback", {"thread_id": thread_id, "item_ids": [reply["id"]], "kind": "positive"}, headers=BOB
    )
    assert stranger.status == 404 and stranger.body["type"] == "error"
    on_user = await post(
        client, "items.feedback", {"thread_id": thread_id, "item_ids": [user["id"]], "kind": "positive"}, headers=ALICE
    )
    assert 400 <= on_user.status < 500 and on_user.body["type"] == "error"
    mixed = await post(
        client,
        "items.feedback",
        {"thread_id": thread_id, "item_ids": [reply["id"], user["id"]], "kind": "negative"},
        headers=ALICE,
    )
    assert 400 <= mixed.status < 500 and mixed.body["type"] == "error"
    detail = (await client.get(f"/api/conversations/{thread_id}", headers=ALICE)).json()
    assert [m["feedback"]["rating"] for m in detail["messages"] if m["id"] == message_id] == ["up"]  # none applied


def test_a_generated_title_is_a_thread_updated_event_after_the_reply() -> None:
    import json

    from backend.chat.events import Done, Start, Text, Title, Usage
    from backend.protocols.chatkit.encoder import Encoder
    from tests.protocols.chatkit_wire import EVENT

    encoder = Encoder()
    message = "0b7e7c8e-0000-4000-8000-000000000001"
    stream = [
        Start(conversation_id="c1", message_id=message, title="hi"),
        Text(content="Hel"),
        Title(conversation_id="c1", title="A Greeting"),
        Text(content="lo"),
        Done(conversation_id="c1", message_id=message, finish_reason="stop", usage=Usage()),
    ]
    frames = b"".join(encoder.encode(i + 1, event) for i, event in enumerate(stream)).decode()
    events = [json.loads(line[6:]) for line in frames.splitlines() if line.startswith("data: ")]
    for event in events:
        check(EVENT, event)
    types = [e["type"] for e in events]
    assert types.count("thread.item.added") == 1, "the title did not split the reply"
    assert types[-1] == "thread.updated" and events[-1]["thread"]["title"] == "A Greeting"
