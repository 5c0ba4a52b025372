"""A finished turn is freed by reference counting, not left for a full garbage collection.

Under load a full collection walks every object and holds the event loop for tens to hundreds of milliseconds, so
each reference cycle that keeps a turn's objects alive makes those pauses longer and more frequent. The Agents SDK's
run result and LiteLLM's stream sit in cycles of their own; these tests check that ours (the turn, its live fan-out
with every frame, the model stream guard) are not pulled into them.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable

import httpx

from backend.app import create_app
from backend.chat.litellm_guard import GuardedStream
from backend.chat.live import LiveTurn
from backend.chat.turn import TurnRun
from backend.settings import Settings
from tests.conftest import serve
from tests.fakes.gemini import FakeGemini, function_call_turn, handoff_turn, text_turn
from tests.sse import chat


def _alive(*kinds: type) -> list[object]:
    return [o for o in gc.get_objects() if isinstance(o, kinds)]


async def test_a_finished_turn_with_a_tool_and_a_widget_leaves_nothing_for_the_collector(
    gemini_settings: Callable[..., Settings], fake: FakeGemini
) -> None:
    app = create_app(gemini_settings())
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
        fake.script(handoff_turn(), function_call_turn("list_tasks", {}), text_turn(["warm ", "up"]))
        await chat(client, {"message": "warm up"})
        gc.collect()
        gc.disable()  # only reference counting from here on
        try:
            fake.script(handoff_turn(), function_call_turn("list_tasks", {}), text_turn(["a ", "b"]))
            stream = await chat(client, {"message": "list my tasks"})
            for _ in range(50):  # the turn's task ends just after `done` is sent
                if not _alive(TurnRun, LiveTurn, GuardedStream):
                    break
                await asyncio.sleep(0.02)
            alive = _alive(TurnRun, LiveTurn, GuardedStream)
        finally:
            gc.enable()
    assert "widget" in [e["type"] for e in stream.events], "the turn showed a widget (the context's sink was used)"
    assert alive == [], f"kept alive by a reference cycle: {alive}"
