"""The AI SDK's UI message stream (`POST /api/chat`): the mapping, bad bodies, ownership. Real uvicorn, fake Gemini.

The real `ai` 5, 6 and 7 clients drive the same endpoints in `tests/js/aisdk/` (run by `test_aisdk_node.py`).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from backend.settings import Settings
from tests.conftest import live
from tests.fakes.gemini import FakeGemini, error_turn, function_call_turn, handoff_turn, text_turn
from tests.sse import Stream, read_stream

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def client(gemini_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    async with live(gemini_settings()) as http:
        yield http


def user(text: str, message_id: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": message_id or uuid.uuid4().hex[:16], "role": "user", "parts": [{"type": "text", "text": text}], **extra}


def body(chat_id: str, *messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": chat_id, "messages": list(messages), "trigger": "submit-message", **extra}


async def post(
    client: httpx.AsyncClient, payload: dict[str, Any] | str, version: int | None = None, **headers: str
) -> Stream:
    all_headers = {**headers, **({"X-AI-SDK-Version": str(version)} if version else {})}
    if isinstance(payload, str):
        all_headers["Content-Type"] = "application/json"
        return await read_stream(client, "POST", "/api/chat", headers=all_headers, content=payload)
    return await read_stream(client, "POST", "/api/chat", headers=all_headers, json=payload)


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


async def test_a_text_turn_maps_to_start_steps_text_and_finish(client: httpx.AsyncClient, fake: FakeGemini) -> None:
    fake.script(text_turn(["Hel", "lo ", "there"], thinking=["Let me think."]))
    stream = ui_stream(await post(client, body("chat-text-1", user("hi"))))
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
