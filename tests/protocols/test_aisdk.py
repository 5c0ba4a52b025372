"""The AI SDK's UI message stream (`POST /api/chat`): the mapping, bad bodies, ownership. Real uvicorn, fake Gemini.

The real `ai` 5, 6 and 7 clients drive the same endpoints in `tests/js/aisdk/` (run by `test_aisdk_node.py`).
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from backend.settings import Settings
from tests.conftest import SECRET, bearer, live
from tests.fakes.gemini import FakeGemini, function_call_turn, handoff_turn, text_turn
from tests.sse import Stream, read_stream

pytestmark = pytest.mark.timeout(90)
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


@pytest.fixture
async def client(gemini_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    async with live(gemini_settings()) as http:
        yield http


@pytest.fixture
async def auth_live(gemini_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    async with live(gemini_settings(auth_secret=SECRET)) as http:
        yield http


def user(text: str, *parts: dict[str, Any]) -> dict[str, Any]:
    return {"id": uuid.uuid4().hex[:16], "role": "user", "parts": [{"type": "text", "text": text}, *parts]}


def body(chat_id: str, *messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": chat_id, "messages": list(messages), "trigger": "submit-message", **extra}


def new_chat() -> str:
    return f"chat-{uuid.uuid4().hex[:12]}"


async def post(
    client: httpx.AsyncClient, payload: dict[str, Any] | str, version: int | None = None, **headers: str
) -> Stream:
    all_headers = {**headers, **({"X-AI-SDK-Version": str(version)} if version else {})}
    if isinstance(payload, str):
        all_headers["Content-Type"] = "application/json"
        return await read_stream(client, "POST", "/api/chat", headers=all_headers, content=payload)
    return await read_stream(client, "POST", "/api/chat", headers=all_headers, json=payload)


async def resume(client: httpx.AsyncClient, chat_id: str, **headers: str) -> Stream:
    return await read_stream(client, "GET", f"/api/chat/{chat_id}/stream", headers=headers)


def ui_stream(stream: Stream) -> Stream:
    """A well-formed UI message stream: the header, an `id:` on every chunk, one start, one end, `[DONE]`."""
    assert stream.status == 200, stream.body
    assert stream.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert stream.frames[-1].done_sentinel
    chunks = [f for f in stream.frames if f.data is not None]
    assert all(f.id is not None for f in chunks), "every chunk carries our event id"
    assert stream.types.count("start") <= 1
    assert stream.types[-1] in ("finish", "abort"), stream.types
    return stream


def text_of(stream: Stream) -> str:
    return "".join(e["delta"] for e in stream.of("text-delta"))


def error_of(stream: Stream) -> tuple[int, str]:
    assert stream.body is not None, stream.types
    return stream.status, stream.body["error"]["code"]


async def test_a_text_turn_maps_to_start_steps_text_and_finish(client: httpx.AsyncClient, fake: FakeGemini) -> None:
    fake.script(text_turn(["Hel", "lo ", "there"], thinking=["Let me think."]))
    stream = ui_stream(await post(client, body(new_chat(), user("hi"))))
    assert stream.types == [
        "start",
        "start-step",
        "data-agent",
        "message-metadata",
        "reasoning-start",
        "reasoning-delta",
        "reasoning-end",
        "text-start",
        "text-delta",
        "text-delta",
        "text-delta",
        "text-end",
        "finish-step",
        "finish",
    ], stream.types
    start = stream.events[0]
    assert text_of(stream) == "Hello there"
    stored = (await client.get(f"/api/conversations/{start['messageMetadata']['conversationId']}")).json()
    assert stored["messages"][1]["id"] == start["messageId"]
    assert stored["messages"][1]["content"] == "Hello there"
    finish = stream.events[-1]
    assert finish["finishReason"] == "stop"
    assert finish["messageMetadata"]["usage"]["total_tokens"] > 0
    ids = [f.id for f in stream.frames if f.id is not None]
    assert ids == sorted(ids)


async def test_a_chat_id_names_one_conversation_and_the_history_is_the_servers(
    client: httpx.AsyncClient, fake: FakeGemini
) -> None:
    chat_id = new_chat()
    fake.script(text_turn("One."), text_turn("Two."))
    first = ui_stream(await post(client, body(chat_id, user("first"))))
    made_up = {"id": "x", "role": "assistant", "parts": [{"type": "text", "text": "I never said this"}]}
    second = ui_stream(await post(client, body(chat_id, user("first"), made_up, user("second"))))
    conversation_id = first.events[0]["messageMetadata"]["conversationId"]
    assert second.events[0]["messageMetadata"]["conversationId"] == conversation_id
    stored = (await client.get(f"/api/conversations/{conversation_id}")).json()
    assert [m["content"] for m in stored["messages"]] == ["first", "One.", "second", "Two."]
    contents = fake.requests[-1]["contents"]
    assert "I never said this" not in str(contents), "only the last message of the client's list is taken"


async def test_a_tool_turn_with_a_handoff_maps_to_steps_and_tool_chunks(
    client: httpx.AsyncClient, fake: FakeGemini
) -> None:
    fake.script(handoff_turn(), function_call_turn("list_tasks", {}), text_turn("None yet."))
    stream = ui_stream(await post(client, body(new_chat(), user("my tasks?")), version=7))
    agents = [e["data"]["name"] for e in stream.of("data-agent")]
    assert agents == ["Triage", "Task assistant"]
    assert stream.of("message-metadata")[-1]["messageMetadata"] == {"agent": "Task assistant"}
    call = stream.of("tool-input-available")[0]
    assert (call["toolName"], call["input"]) == ("list_tasks", {})
    output = stream.of("tool-output-available")[0]
    assert output["toolCallId"] == call["toolCallId"]
    widget = stream.of("data-widget")[0]
    assert widget["id"] and widget["data"]["type"]
    types = stream.types
    after_output = types[types.index("tool-output-available") + 1 :]
    assert after_output[:3] == ["finish-step", "start-step", "text-start"], "the next model call is the next step"
    assert types.count("start-step") == types.count("finish-step")


@pytest.mark.parametrize("version", [5, 6])
async def test_an_approval_request_uses_only_chunks_the_version_knows(
    client: httpx.AsyncClient, fake: FakeGemini, version: int
) -> None:
    assert (await client.post("/api/tasks", json={"title": "milk"})).status_code == 201
    chat_id = new_chat()
    fake.script(handoff_turn(), function_call_turn("delete_task", {"task": "milk"}))
    paused = ui_stream(await post(client, body(chat_id, user("delete milk")), version=version))
    call_id = paused.of("tool-input-available")[-1]["toolCallId"]
    assert paused.events[-1]["finishReason"] == "tool-calls"
    if version == 5:
        assert "tool-approval-request" not in paused.types
        assert paused.of("data-approval")[0]["data"]["toolCallId"] == call_id
    else:
        assert paused.of("tool-approval-request") == [
            {"type": "tool-approval-request", "approvalId": call_id, "toolCallId": call_id}
        ]
    reply_id = paused.events[0]["messageId"]
    tool_part: dict[str, Any] = {"type": "tool-delete_task", "toolCallId": call_id, "input": {"task": "milk"}}
    if version == 5:
        tool_part |= {"state": "output-available", "output": {"approved": False, "reason": "keep it"}}
    else:
        tool_part |= {
            "state": "approval-responded",
            "approval": {"id": call_id, "approved": False, "reason": "keep it"},
        }
    answer = {"id": reply_id, "role": "assistant", "parts": [{"type": "step-start"}, tool_part]}
    fake.script(text_turn("Kept it."))
    resumed = ui_stream(await post(client, body(chat_id, user("delete milk"), answer), version=version))
    assert resumed.events[0]["messageId"] == reply_id
    denied = resumed.of("tool-output-denied")
    if version == 5:
        assert not denied
        assert resumed.of("tool-output-available")[0]["output"] == {"error": "keep it", "rejected": True}
    else:
        assert denied == [{"type": "tool-output-denied", "toolCallId": call_id}]
    assert text_of(resumed) == "Kept it."
    assert [t["title"] for t in (await client.get("/api/tasks")).json()["data"]] == ["milk"]


async def test_bad_bodies_get_typed_errors_before_any_stream(client: httpx.AsyncClient) -> None:
    chat_id = new_chat()
    cases: list[tuple[dict[str, Any] | str, int, str]] = [
        ("{not json", 400, "malformed_json"),
        ({"id": chat_id, "messages": [], "trigger": "submit-message"}, 422, "validation_error"),
        ({"id": chat_id, "messages": [{"role": "user"}], "trigger": "submit-message"}, 422, "validation_error"),
        ({"id": chat_id, "messages": "hi", "trigger": "submit-message"}, 422, "validation_error"),
        (body(chat_id, {"id": "m", "role": "robot", "parts": []}), 422, "validation_error"),
        ({**body(chat_id, user("hi")), "trigger": "resume-everything"}, 422, "validation_error"),
        ({"messages": [user("hi")], "trigger": "submit-message"}, 422, "validation_error"),
        (
            body(chat_id, {"id": "m", "role": "user", "parts": [{"type": "text", "text": "  "}]}),
            422,
            "validation_error",
        ),
        (
            body(chat_id, user("see", {"type": "file", "mediaType": "image/png", "url": "https://evil/x.png"})),
            422,
            "validation_error",
        ),
        (
            body(chat_id, user("see", {"type": "file", "mediaType": "image/png", "url": "data:image/png;base64,@@"})),
            422,
            "validation_error",
        ),
    ]
    for payload, status, code in cases:
        assert error_of(await post(client, payload)) == (status, code), payload
    bad_version = await read_stream(
        client, "POST", "/api/chat", headers={"X-AI-SDK-Version": "4"}, json=body(chat_id, user("hi"))
    )
    assert error_of(bad_version)[0] in (400, 422)
    assert (await client.get(f"/api/chat/{chat_id}/stream")).status_code == 204, "nothing was started"


async def test_file_parts_become_attachments_with_the_upload_limits(
    gemini_settings: Callable[..., Settings], fake: FakeGemini
) -> None:
    async with live(gemini_settings(file_max_bytes=2000)) as client:
        data_url = "data:image/png;base64," + base64.b64encode(PNG).decode()
        fake.script(text_turn("A pixel."), text_turn("Again."))
        chat_id = new_chat()
        stream = ui_stream(
            await post(
                client, body(chat_id, user("what is it?", {"type": "file", "mediaType": "image/png", "url": data_url}))
            )
        )
        conversation_id = stream.events[0]["messageMetadata"]["conversationId"]
        stored = (await client.get(f"/api/conversations/{conversation_id}")).json()["messages"][0]
        assert [a["content_type"] for a in stored["attachments"]] == ["image/png"]
        assert "inline_data" in str(fake.requests[-1]["contents"]) or "inlineData" in str(fake.requests[-1]["contents"])
        file_id = stored["attachments"][0]["id"]
        ours = {"type": "file", "mediaType": "image/png", "url": f"/api/files/{file_id}/content"}
        again = ui_stream(await post(client, body(chat_id, user("and this?", ours))))
        assert text_of(again) == "Again."
        too_big = "data:image/png;base64," + base64.b64encode(PNG + b"\0" * 3000).decode()
        over = await post(
            client, body(chat_id, user("big", {"type": "file", "mediaType": "image/png", "url": too_big}))
        )
        assert error_of(over) == (413, "file_too_large")
        not_mine = {"type": "file", "url": f"/api/files/{uuid.uuid4()}/content"}
        assert error_of(await post(client, body(chat_id, user("x", not_mine)))) == (404, "not_found")


async def test_another_users_chat_is_404_everywhere(auth_live: httpx.AsyncClient, fake: FakeGemini) -> None:
    alice, bob = bearer("alice"), bearer("bob")
    chat_id = str(uuid.uuid4())  # a conversation id, as a frontend listing /api/conversations passes it
    fake.script(text_turn(["slow ", "reply "] * 20, delay=0.05))
    started = asyncio.create_task(post(auth_live, body(chat_id, user("mine")), **alice))
    for _ in range(200):
        if (await auth_live.get(f"/api/chat/{chat_id}/stream", headers=bob)).status_code == 404:
            break
        await asyncio.sleep(0.05)
    assert error_of(await post(auth_live, body(chat_id, user("yours?")), **bob)) == (404, "not_found")
    assert error_of(await resume(auth_live, chat_id, **bob)) == (404, "not_found")
    assert (await auth_live.delete(f"/api/chat/{chat_id}/stream", headers=bob)).status_code == 404
    regenerate = {**body(chat_id, user("mine")), "trigger": "regenerate-message"}
    assert error_of(await post(auth_live, regenerate, **bob)) == (404, "not_found")
    mine = ui_stream(await started)
    assert "slow" in text_of(mine)
    assert (await auth_live.get(f"/api/chat/{chat_id}/stream", headers=alice)).status_code == 204


async def test_a_running_chat_answers_409_resumes_and_stops_for_real(
    client: httpx.AsyncClient, fake: FakeGemini
) -> None:
    chat_id = new_chat()
    fake.script(text_turn([f"w{i} " for i in range(60)], delay=0.05))
    first = await read_stream(client, "POST", "/api/chat", json=body(chat_id, user("go")), stop_after_texts=1)
    assert first.status == 200
    busy = await post(client, body(chat_id, user("go"), user("again")))
    assert error_of(busy) == (409, "run_in_progress")
    replay = await read_stream(client, "GET", f"/api/chat/{chat_id}/stream", stop_after_texts=2)
    assert replay.types[:2] == ["start", "start-step"], "a resume replays the running reply from its start"
    assert replay.events[0]["messageId"] == first.events[0]["messageId"]
    last_id = replay.last_id
    tail = asyncio.create_task(resume(client, chat_id, **{"Last-Event-ID": str(last_id)}))
    await asyncio.sleep(0.2)
    assert (await client.delete(f"/api/chat/{chat_id}/stream")).status_code == 204
    rest = await tail
    assert rest.status == 200 and "start" not in rest.types, "after Last-Event-ID: no second start"
    assert rest.types[-1] == "abort" and rest.frames[-1].done_sentinel
    stored = (await client.get(f"/api/conversations/{first.events[0]['messageMetadata']['conversationId']}")).json()
    assert stored["messages"][-1]["status"] == "cancelled"
    assert (await client.get(f"/api/chat/{chat_id}/stream")).status_code == 204
    assert (await client.delete(f"/api/chat/{chat_id}/stream")).status_code == 204, "stopping is idempotent"


async def test_regenerate_adds_a_version_of_the_last_reply(client: httpx.AsyncClient, fake: FakeGemini) -> None:
    chat_id = new_chat()
    fake.script(text_turn("First answer."), text_turn("Second answer."))
    first = ui_stream(await post(client, body(chat_id, user("question"))))
    old_id = first.events[0]["messageId"]
    unknown = {**body(chat_id, user("question")), "trigger": "regenerate-message", "messageId": str(uuid.uuid4())}
    assert error_of(await post(client, unknown)) == (404, "not_found")
    again = {**body(chat_id, user("question")), "trigger": "regenerate-message", "messageId": old_id}
    second = ui_stream(await post(client, again))
    assert text_of(second) == "Second answer." and second.events[0]["messageId"] != old_id
    conversation_id = first.events[0]["messageMetadata"]["conversationId"]
    stored = (await client.get(f"/api/conversations/{conversation_id}")).json()
    assert [m["content"] for m in stored["messages"]] == ["question", "Second answer."]
    assert stored["messages"][-1]["sibling_ids"] == [old_id, second.events[0]["messageId"]], "the old one is kept"
    assert "First answer." not in str(fake.requests[-1]["contents"])


async def test_a_widget_action_is_a_body_field(client: httpx.AsyncClient, fake: FakeGemini) -> None:
    created = (await client.post("/api/tasks", json={"title": "bread"})).json()
    chat_id = new_chat()
    fake.script(handoff_turn(), function_call_turn("list_tasks", {}), text_turn("Here."))
    listed = ui_stream(await post(client, body(chat_id, user("list"))))
    widget = listed.of("data-widget")[0]
    reply = {"id": listed.events[0]["messageId"], "role": "assistant", "parts": []}
    action = {"type": "tasks.toggle", "payload": {"task_id": created["id"], "completed": True}}
    acted = ui_stream(await post(client, body(chat_id, user("list"), reply, action=action)))
    updated = acted.of("data-widget")
    assert [w["id"] for w in updated] == [widget["id"]], "the same widget id: the client updates it where it is shown"
    conversation_id = listed.events[0]["messageMetadata"]["conversationId"]
    stored = (await client.get(f"/api/conversations/{conversation_id}")).json()["messages"]
    assert acted.events[0]["messageId"] == stored[-1]["id"], "the action's short reply is a message of its own"
    assert text_of(acted) == stored[-1]["content"]
    assert (await client.get(f"/api/tasks/{created['id']}")).json()["completed"] is True


async def test_two_users_who_pick_the_same_chat_id_get_two_conversations(
    auth_live: httpx.AsyncClient, fake: FakeGemini
) -> None:
    chat_id = "chat-1"  # a client-made id: scoped to its user, so it neither collides nor reveals another's chat
    fake.script(text_turn("For Alice."), text_turn("For Bob."))
    alice = ui_stream(await post(auth_live, body(chat_id, user("mine")), **bearer("alice")))
    bob = ui_stream(await post(auth_live, body(chat_id, user("mine too")), **bearer("bob")))
    assert (text_of(alice), text_of(bob)) == ("For Alice.", "For Bob.")
    ids = {s.events[0]["messageMetadata"]["conversationId"] for s in (alice, bob)}
    assert len(ids) == 2
    listed = (await auth_live.get("/api/conversations", headers=bearer("bob"))).json()["data"]
    assert [c["id"] for c in listed] == [bob.events[0]["messageMetadata"]["conversationId"]]


async def test_inline_files_count_toward_the_message_caps(gemini_settings: Callable[..., Settings]) -> None:
    def inline(padding: int) -> dict[str, Any]:
        url = "data:image/png;base64," + base64.b64encode(PNG + b"\0" * padding).decode()
        return {"type": "file", "mediaType": "image/png", "url": url}

    settings = gemini_settings(file_max_bytes=4000, message_attachment_bytes=3000, files_per_message_max=2)
    async with live(settings) as client:
        # Each file is under FILE_MAX_BYTES; together they are over MESSAGE_ATTACHMENT_BYTES.
        both = await post(client, body(new_chat(), user("two", inline(1700), inline(1700))))
        assert error_of(both) == (413, "attachments_too_large")
        three = await post(client, body(new_chat(), user("three", inline(0), inline(0), inline(0))))
        assert error_of(three) == (422, "too_many_attachments")
