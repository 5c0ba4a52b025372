"""The start-up warm-up: the first turn of a worker does not pay LiteLLM's lazy loading on the event loop."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from backend.chat.model import build_model, warm_up
from backend.settings import PROJECT_ROOT, load_settings
from tests.fakes.gemini import FakeGemini


async def test_the_start_up_warm_up_runs_the_model_path_without_calling_the_provider():
    async with FakeGemini() as gemini:
        settings = load_settings(gemini_api_key="k", gemini_api_base=gemini.base_url, offline_model=False)
        model, model_settings = build_model(settings)
        assert await warm_up(model, model_settings), "LiteLLM's mock_response no longer completes a streamed turn"
        assert gemini.requests == [], "the warm-up reached the provider"
    offline, offline_settings = build_model(load_settings(offline_model=True))
    assert not await warm_up(offline, offline_settings)  # nothing to warm


FIRST_TURN = """
import asyncio, json, sys
import httpx
from backend.app import create_app
from backend.settings import load_settings
from tests.conftest import serve
from tests.fakes.gemini import FakeGemini, function_call_turn, handoff_turn, text_turn
from tests.sse import chat

async def main():
    async with FakeGemini() as fake:
        settings = load_settings(
            database_url="sqlite+aiosqlite:///" + sys.argv[1], gemini_api_key="k", gemini_api_base=fake.base_url,
            offline_model=False,
        )
        app = create_app(settings)
        async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
            at_start, before = len(fake.requests), set(sys.modules)
            fake.script(handoff_turn(), function_call_turn("list_tasks", {}), text_turn(["a ", "b"]))
            stream = await chat(client, {"message": "list my tasks"})
            loaded = sorted(set(sys.modules) - before)
            done = stream.events[-1]["type"]
            print(json.dumps({"loaded": loaded, "requests_at_start": at_start, "done": done}))

asyncio.run(main())
"""


def test_after_start_up_the_first_turn_of_a_fresh_process_loads_almost_nothing(tmp_path: Path) -> None:
    # A fresh interpreter: in this one, earlier tests have loaded everything already.
    out = subprocess.run(
        [sys.executable, "-c", FIRST_TURN, str(tmp_path / "chat.db")],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["done"] == "done"
    assert result["requests_at_start"] == 0, "start-up reached the provider"
    # Without the warm-up, LiteLLM loads about 125 modules during this first turn.
    assert len(result["loaded"]) <= 10, result["loaded"]
