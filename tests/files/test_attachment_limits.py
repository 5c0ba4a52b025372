"""Issue 18 §1: what one user can make the server hold for attachments is bounded.

The bytes of one message's attachments (`MESSAGE_ATTACHMENT_BYTES`), the bytes of earlier attachments replayed to the
model (`HISTORY_ATTACHMENT_BYTES`, which the new message's files use up first), and the replies one user may have
running at once in all processes (`MAX_TURNS_PER_USER`, 429 with `Retry-After`). Real uvicorn, the real SDK and
LiteLLM against the fake Gemini, both databases. The memory these bounds add up to is measured in
`tests/files/test_attachment_memory.py`.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from backend.app import create_app
from backend.settings import Settings
from tests.conftest import live, serve
from tests.fakes.gemini import FakeGemini, text_turn
from tests.sse import chat

pytestmark = pytest.mark.timeout(120)


def png_of(size: int, seed: int = 0) -> bytes:
    """`size` bytes that the server takes for a PNG (its signature, then filler)."""
    return b"\x89PNG\r\n\x1a\n" + bytes([seed % 251]) * (size - 8)


async def upload(client: httpx.AsyncClient, data: bytes, name: str = "a.png") -> str:
    response = await client.post("/api/files", files={"file": (name, data, "image/png")})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def inline_bytes(request: dict[str, Any]) -> int:
    """The decoded bytes of every inline attachment in one recorded Gemini request."""
    return sum(
        len(base64.b64decode(part["inline_data"]["data"]))
        for content in request["contents"]
        for part in content["parts"]
        if "inline_data" in part
    )


async def test_a_message_over_the_attachment_byte_cap_is_413(
    gemini_settings: Callable[..., Settings], fake: FakeGemini
) -> None:
    async with live(gemini_settings(message_attachment_bytes=3000, file_max_bytes=2000)) as client:
        a, b = await upload(client, png_of(2000, 1)), await upload(client, png_of(1000, 2))
        c = await upload(client, png_of(1001, 3))
        over = await chat(client, {"message": "hi", "attachments": [a, c]})
        assert over.status == 413, over.body
        assert over.body["error"]["code"] == "attachments_too_large"
        assert (await client.get("/api/conversations")).json()["data"] == []
        fits = await chat(client, {"message": "hi", "attachments": [a, b, a]})  # a repeated id counts once
        assert fits.status == 200 and fits.types[-1] == "done"
    assert inline_bytes(fake.requests[-1]) == 3000


async def test_the_attachments_of_a_turn_stay_within_the_budgets(
    gemini_settings: Callable[..., Settings], fake: FakeGemini
) -> None:
    """Earlier attachments are replayed only in what the history budget leaves after the new message's files."""
    settings = gemini_settings(message_attachment_bytes=4000, history_attachment_bytes=5000, file_max_bytes=4000)
    async with live(settings) as client:
        thread = None
        for turn in range(6):
            size = 4000 if turn % 2 else 1500
            body: dict[str, Any] = {"message": f"m{turn}", "attachments": [await upload(client, png_of(size, turn))]}
            if thread is not None:
                body["thread_id"] = thread
            stream = await chat(client, body)
            assert stream.status == 200 and stream.types[-1] == "done", stream.body
            thread = stream.events[0]["conversation_id"]
        last = await chat(client, {"message": "and now?", "thread_id": thread})
        assert last.status == 200
    sizes = [inline_bytes(request) for request in fake.requests]
    assert max(sizes) <= max(4000, 5000)
    assert sizes[1] == 4000  # its 4000 new bytes leave 1000: not enough for the earlier 1500
    assert sizes[-1] == 4000  # no new files: the newest earlier file (4000) fits, the next one (1500) does not


async def test_the_running_turns_of_one_user_are_limited_across_processes(
    gemini_settings: Callable[..., Settings], fake: FakeGemini
) -> None:
    """Two apps on one database (two processes' worth of state): 3 replies may run at once, the rest get 429."""
    fake.default_turn = text_turn(["slow "] * 10, delay=1.0)  # 10 s: every request starts while the first three run
    settings = gemini_settings(max_turns_per_user=3)
    async with (
        serve(create_app(settings)) as one,
        serve(create_app(settings)) as two,
        httpx.AsyncClient(base_url=one, timeout=60) as a,
        httpx.AsyncClient(base_url=two, timeout=60) as b,
    ):
        streams = await asyncio.gather(*(chat(client, {"message": "hi"}) for client in (a, b) * 4))
    accepted = [s for s in streams if s.status == 200]
    refused = [s for s in streams if s.status != 200]
    assert len(accepted) == 3, [s.status for s in streams]
    assert all(s.types[-1] == "done" and s.events[-1]["finish_reason"] == "stop" for s in accepted)
    assert {s.status for s in refused} == {429}
    assert {s.body["error"]["code"] for s in refused} == {"rate_limited"}
    assert all(int(s.headers["retry-after"]) > 0 for s in refused)
