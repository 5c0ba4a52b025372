"""Our model against the SDK's `LitellmModel`: the same scripted conversations give the same results.

Each scenario runs through the whole server (real uvicorn, SDK, LiteLLM, the fake Gemini, both databases) once per
`MODEL_USAGE_SOURCE`: ``litellm_model`` (the SDK's `LitellmModel` with the truncated-stream guard, LiteLLM's
end-of-stream rebuild, cost and logging), ``finish_chunk`` (ours, the default) and ``usage_chunk`` (ours, the
documented fallback). The stream events, the stored messages, the usage (non-zero, what the fake reported) and the
history replayed to the model on a follow-up turn must be the same, ids and timestamps aside. A last test compares
the Agents SDK's own raw events and run items for both models, without the server.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from agents import Runner

from backend.chat.litellm_guard import GuardedLitellmModel
from backend.chat.litellm_model import FinishChunkLitellmModel
from backend.chat.model import build_model
from backend.settings import Settings, load_settings
from backend.team.agents import build_agent
from tests import files_samples as samples
from tests.conftest import live
from tests.fakes.gemini import (
    FakeGemini,
    Turn,
    error_turn,
    function_call_turn,
    handoff_turn,
    mid_stream_error_turn,
    text_turn,
    truncated_turn,
)
from tests.sse import Stream, chat

pytestmark = pytest.mark.timeout(120)

SOURCES = ("litellm_model", "finish_chunk", "usage_chunk")
VOLATILE = {
    "id",
    "response_id",
    "conversation_id",
    "message_id",
    "thread_id",
    "created_at",
    "updated_at",
    "completed_at",
    "at",
}
ID_LIKE = re.compile(r"\b(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|call_[0-9A-Za-z_-]+)\b")
FOLLOW_UP = text_turn(["You're ", "welcome."], usage=(40, 2))


@dataclass
class Record:
    """What one run of a scenario left: its streams, the stored conversation and the model's requests."""

    streams: list[list[dict[str, Any]]] = field(default_factory=list)
    stored: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)


class Session:
    """One scenario run: a live server for one usage source, the fake, and what was seen."""

    def __init__(self, client: httpx.AsyncClient, fake: FakeGemini) -> None:
        self.client = client
        self.fake = fake
        self.record = Record()
        self.conversation_id: str | None = None

    async def send(self, body: dict[str, Any], *turns: Turn, stop_after_texts: int | None = None) -> Stream:
        self.fake.script(*turns)
        if self.conversation_id is not None:
            body = {"thread_id": self.conversation_id, **body}
        stream = await chat(self.client, body, stop_after_texts=stop_after_texts)
        assert stream.status == 200, stream.body
        self.conversation_id = stream.events[0]["conversation_id"]
        self.record.streams.append(stream.events)
        return stream

    async def messages(self) -> list[dict[str, Any]]:
        response = await self.client.get(f"/api/conversations/{self.conversation_id}")
        assert response.status_code == 200, response.text
        return list(response.json()["messages"])


Scenario = Callable[[Session], Awaitable[None]]


def normalized(value: Any, names: dict[str, str] | None = None) -> Any:
    """`value` with ids and timestamps replaced by placeholders numbered in order of appearance."""
    names = {} if names is None else names

    def name(raw: str) -> str:
        return names.setdefault(raw, f"<{len(names)}>")

    if isinstance(value, dict):
        return {k: name(str(v)) if k in VOLATILE and v is not None else normalized(v, names) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalized(v, names) for v in value]
    if isinstance(value, str):
        return ID_LIKE.sub(lambda m: name(m.group()), value)
    return value


def request_body(request: dict[str, Any]) -> dict[str, Any]:
    """What LiteLLM sent the provider (the fake's bookkeeping dropped)."""
    return {k: v for k, v in request.items() if k not in {"headers", "path", "api_key"}}


async def run(scenario: Scenario, settings: Settings, fake: FakeGemini) -> Record:
    fake.reset()
    async with live(settings) as client:
        session = Session(client, fake)
        await scenario(session)
        await session.send({"message": "thanks"}, FOLLOW_UP)  # what the model is told of the turn(s) above
        session.record.stored = await session.messages()
    assert fake.queued == 0, "the scenario left scripted turns unused"
    session.record.requests = [request_body(r) for r in fake.requests]
    return session.record


def done_usage(record: Record) -> list[dict[str, int] | None]:
    return [next((e.get("usage") for e in events if e["type"] == "done"), None) for events in record.streams]


# --- scenarios ----------------------------------------------------------------------------------------------------


async def text_reply(session: Session) -> None:
    await session.send({"message": "hi"}, text_turn(["Hel", "lo ", "there."], usage=(11, 3)))


async def tool_turn(session: Session) -> None:
    # A handoff, a tool call carrying a Gemini thought signature, then a reply with a thought summary.
    await session.send(
        {"message": "add buy milk"},
        handoff_turn(usage=(10, 2)),
        function_call_turn("add_task", {"title": "buy milk"}, thought_signature="c2lnLTE=", usage=(20, 7)),
        text_turn(["Added ", "buy milk."], thinking=["Adding it."], usage=(30, 4, 5)),
    )


async def handoff_to_help(session: Session) -> None:
    await session.send(
        {"message": "what can you do?"},
        handoff_turn("help", usage=(9, 2)),
        function_call_turn("describe_setup", {}, usage=(15, 3)),
        text_turn(["I manage ", "your tasks."], usage=(25, 4)),
    )


async def approval_pause_and_resume(session: Session) -> None:
    created = await session.client.post("/api/tasks", json={"title": "milk"})
    assert created.status_code == 201
    paused = await session.send(
        {"message": "delete milk"}, handoff_turn(), function_call_turn("delete_task", {"task": "milk"})
    )
    approval = paused.of("approval_request")[0]
    await session.send(
        {"approvals": [{"id": approval["id"], "approve": True}]}, text_turn("Deleted milk.", usage=(12, 2))
    )


async def client_tool(session: Session) -> None:
    paused = await session.send(
        {"message": "dark mode please"}, handoff_turn(), function_call_turn("set_theme", {"theme": "dark"})
    )
    call = paused.of("client_tool_call")[0]
    await session.send(
        {"client_tool_results": [{"id": call["id"], "result": {"theme": "dark"}}]},
        text_turn("Switched to dark.", usage=(12, 3)),
    )


async def attachment(session: Session) -> None:
    ids = []
    for name, data in (("chart.png", samples.png()), ("notes.txt", samples.TEXT)):
        response = await session.client.post("/api/files", files={"file": (name, data, "application/octet-stream")})
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    await session.send(
        {"message": "what are these?", "attachments": ids}, text_turn("A chart and notes.", usage=(50, 4))
    )


async def truncated_stream(session: Session) -> None:
    await session.send({"message": "hi"}, truncated_turn(["Par", "tial"]))


async def error_before_the_first_token(session: Session) -> None:
    await session.send({"message": "hi"}, error_turn(429), text_turn("Recovered.", usage=(8, 1)))  # retried
    await session.send({"message": "again"}, error_turn(400, message="bad request secret"))  # not retried


async def error_after_the_first_token(session: Session) -> None:
    await session.send({"message": "hi"}, mid_stream_error_turn(["Hel", "lo "], status=500))


SCENARIOS: dict[str, Scenario] = {
    "text": text_reply,
    "tool": tool_turn,
    "handoff": handoff_to_help,
    "approval": approval_pause_and_resume,
    "client_tool": client_tool,
    "attachment": attachment,
    "truncated": truncated_stream,
    "error_before_first_token": error_before_the_first_token,
    "error_after_first_token": error_after_the_first_token,
}
REPORTED_USAGE = {  # what the fake reported per streamed turn of each scenario, the follow-up last
    "text": [(11, 3)],
    "tool": [(10 + 20 + 30, 2 + 7 + 4 + 5)],
    "handoff": [(9 + 15 + 25, 2 + 3 + 4)],
    "approval": [(10 + 20, 2 + 7), (10 + 20 + 12, 2 + 7 + 2)],  # a resumed turn's usage includes the pause's
    "client_tool": [(10 + 20, 2 + 7), (10 + 20 + 12, 2 + 7 + 3)],
    "attachment": [(50, 4)],
    "error_before_first_token": [(8, 1), None],
}


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_our_model_gives_what_litellm_model_gives(name, gemini_settings, fake):
    records = {
        source: await run(SCENARIOS[name], gemini_settings(model_usage_source=source, model_retries=1), fake)
        for source in SOURCES
    }
    reference = records["litellm_model"]
    expected = [*REPORTED_USAGE.get(name, [None]), (40, 2)]
    if name in ("truncated", "error_after_first_token"):
        assert [e["type"] for e in reference.streams[0]][-2:] == ["error", "done"]
    for source, record in records.items():
        assert normalized(record.streams) == normalized(reference.streams), source
        assert normalized(record.stored) == normalized(reference.stored), source
        assert normalized(record.requests) == normalized(reference.requests), source
        usages = done_usage(record)
        for usage, reported in zip(usages, expected, strict=True):
            if reported is not None:
                assert usage == {
                    "input_tokens": reported[0],
                    "output_tokens": reported[1],
                    "total_tokens": sum(reported),
                }
        assert [m.get("usage") for m in record.stored if m["role"] == "assistant"][-1] == usages[-1]


async def test_a_cancel_mid_stream_closes_upstream_and_keeps_the_partial_reply_on_every_model(gemini_settings, fake):
    chunks = [f"word{i} " for i in range(12)]
    seen: dict[str, Any] = {}
    for source in SOURCES:
        fake.reset()
        async with live(gemini_settings(model_usage_source=source, on_disconnect="cancel")) as client:
            session = Session(client, fake)
            stream = await session.send({"message": "long story"}, text_turn(chunks, delay=0.2), stop_after_texts=2)
            assert await fake.wait_until(lambda f: f.disconnects == 1, within=5), f"{source}: upstream left open"
            for _ in range(100):
                messages = await session.messages()
                if messages[1]["status"] != "in_progress":
                    break
                await asyncio.sleep(0.05)
            assert messages[1]["status"] == "cancelled", source
            assert messages[1]["content"].startswith(stream.text) and "".join(chunks).startswith(messages[1]["content"])
            assert fake.completed == 0
            seen[source] = normalized(stream.events)
    assert seen["finish_chunk"] == seen["litellm_model"] == seen["usage_chunk"]


async def _sdk_run(model: Any, model_settings: Any, text: str) -> tuple[list[Any], list[Any], Any]:
    result = Runner.run_streamed(build_agent(model, model_settings), text, context=None)  # type: ignore[arg-type]
    raw = [
        e.data.model_dump(exclude={"sequence_number"})
        async for e in result.stream_events()
        if e.type == "raw_response_event"
    ]
    items = [item.to_input_item() for item in result.new_items]
    usage = result.context_wrapper.usage
    entries = [(u.input_tokens, u.output_tokens, u.total_tokens) for u in usage.request_usage_entries]
    return raw, items, (usage.requests, usage.input_tokens, usage.output_tokens, entries)


async def test_the_sdk_sees_the_same_raw_events_run_items_and_usage_from_both_models(fake):
    results = {}
    for source in SOURCES:
        settings = load_settings(
            gemini_api_key="k", gemini_api_base=fake.base_url, offline_model=False, model_usage_source=source
        )
        model, model_settings = build_model(settings)
        assert isinstance(model, GuardedLitellmModel if source == "litellm_model" else FinishChunkLitellmModel)
        fake.script(
            handoff_turn("help", usage=(10, 2)),
            function_call_turn("describe_setup", {}, thought_signature="c2lnLTE=", usage=(20, 7)),
            text_turn(["I manage ", "your tasks."], thinking=["Checking."], usage=(30, 4, 5)),
        )
        results[source] = await _sdk_run(model, model_settings, "what can you do?")
    reference = normalized(results["litellm_model"])
    assert results["litellm_model"][2] == (3, 60, 18, [(10, 2, 12), (20, 7, 27), (30, 9, 39)])
    for source in SOURCES:
        raw, items, usage = normalized(results[source])
        assert len(raw) == len(reference[0]), source
        for mine, theirs in zip(raw, reference[0], strict=True):
            assert mine == theirs, source
        assert [items, usage] == reference[1:], source
