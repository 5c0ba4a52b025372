"""Approval is asked only once a tool's target is resolved: nobody approves a call that then fails."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from backend.settings import Settings
from tests.conftest import live
from tests.fakes.gemini import FakeGemini, function_call_turn, handoff_turn, text_turn
from tests.sse import chat

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize(("titles", "reference"), [(["call mom"] * 3, "call mom"), (["milk"], "bread")])
async def test_an_ambiguous_or_unknown_target_fails_without_asking(
    gemini_settings: Callable[..., Settings], fake: FakeGemini, titles: list[str], reference: str
):
    async with live(gemini_settings()) as client:
        for title in titles:
            assert (await client.post("/api/tasks", json={"title": title})).status_code == 201
        fake.script(handoff_turn(), function_call_turn("delete_task", {"task": reference}), text_turn("Which one?"))
        stream = await chat(client, {"message": f"delete {reference}"})
        remaining = (await client.get("/api/tasks")).json()["data"]
    assert "approval_request" not in stream.types
    assert stream.events[-1]["finish_reason"] == "stop"
    (result,) = stream.of("tool_result")
    assert "error" in result["result"] and reference in result["result"]["error"]
    assert len(remaining) == len(titles)


@pytest.mark.parametrize("copies", [1, 3])
async def test_delete_call_mom_asks_only_when_one_task_matches(make_settings: Callable[..., Settings], copies: int):
    async with live(make_settings()) as client:  # the offline demo model: "delete X" calls delete_task
        for _ in range(copies):
            assert (await client.post("/api/tasks", json={"title": "call mom"})).status_code == 201
        stream = await chat(client, {"message": "delete call mom"})
    if copies == 1:
        assert stream.of("approval_request")[0]["args"] == {"task": "call mom"}
        assert stream.events[-1]["finish_reason"] == "approval_required"
    else:
        assert "approval_request" not in stream.types
        assert stream.of("tool_result")[0]["result"]["error"].startswith("3 tasks match")
        assert stream.events[-1]["finish_reason"] == "stop"
