"""Traces: a tool turn with a handoff makes one turn span with a child per model call, tool call and handoff, with
`gen_ai.*` attributes and no message contents (the `otel` extra provides the SDK)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from backend.team.agents import TASK_ASSISTANT, TRIAGE
from tests.conftest import live
from tests.fakes.gemini import function_call_turn, handoff_turn, text_turn
from tests.mcp.test_mcp_client import STDIO, mcp_settings
from tests.sse import chat

pytestmark = pytest.mark.timeout(60)
MODEL = "gemini/gemini-2.5-flash"
_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


async def test_a_tool_turn_with_a_handoff_makes_a_span_tree(gemini_settings, fake, spans):
    fake.script(
        handoff_turn(usage=(10, 2)),
        function_call_turn("list_tasks", {}, usage=(20, 7)),
        text_turn("You have no tasks.", usage=(30, 5)),
    )
    async with live(gemini_settings()) as client:
        stream = await chat(client, {"message": "what are my secret tasks?"})
    assert stream.types[-1] == "done"
    finished: list[ReadableSpan] = list(spans.get_finished_spans())
    [turn] = [s for s in finished if s.name == "chat turn"]
    children = [s for s in finished if s.parent is not None and s.parent.span_id == turn.context.span_id]
    assert [s.name for s in sorted(children, key=lambda s: s.start_time or 0)] == [
        f"chat {MODEL}",
        f"handoff {TRIAGE} -> {TASK_ASSISTANT}",
        f"chat {MODEL}",
        "execute_tool list_tasks",
        f"chat {MODEL}",
    ]
    assert all(s.context.trace_id == turn.context.trace_id for s in children)
    assert turn.attributes is not None
    assert turn.attributes["gen_ai.conversation.id"] == stream.of("start")[0]["conversation_id"]
    assert turn.attributes["chat.finish_reason"] == "stop"
    calls = [s for s in children if s.name.startswith("chat ")]
    assert [
        (
            a["gen_ai.agent.name"],
            a["gen_ai.request.model"],
            a["gen_ai.usage.input_tokens"],
            a["gen_ai.usage.output_tokens"],
            tuple(a["gen_ai.response.finish_reasons"]),  # type: ignore[arg-type]
        )
        for a in (dict(s.attributes or {}) for s in calls)
    ] == [
        (TRIAGE, MODEL, 10, 2, ("tool_calls",)),
        (TASK_ASSISTANT, MODEL, 20, 7, ("tool_calls",)),
        (TASK_ASSISTANT, MODEL, 30, 5, ("stop",)),
    ]
    [tool] = [s for s in children if s.name == "execute_tool list_tasks"]
    assert (tool.attributes or {})["gen_ai.tool.name"] == "list_tasks"
    every_value = " ".join(str(v) for s in finished for v in (s.attributes or {}).values())
    assert "secret" not in every_value and "You have no tasks" not in every_value  # no contents recorded


async def test_with_an_endpoint_each_http_request_has_a_span_that_parents_its_turn(
    gemini_settings, fake, spans, monkeypatch
):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9/")  # the test's provider stays in place
    fake.script(text_turn("Hello.", usage=(10, 1)))
    async with live(gemini_settings()) as client:
        stream = await chat(client, {"message": "hi"})
        assert stream.types[-1] == "done"
        assert (await client.get("/api/conversations")).status_code == 200
    finished = list(spans.get_finished_spans())
    by_id = {s.context.span_id: s for s in finished}
    [turn] = [s for s in finished if s.name == "chat turn"]
    assert turn.parent is not None and turn.parent.span_id in by_id
    request = by_id[turn.parent.span_id]
    assert (request.attributes or {}).get(
        "http.method", (request.attributes or {}).get("http.request.method")
    ) == "POST"
    assert any("/api/conversations" in s.name for s in finished)


async def test_an_mcp_tool_call_is_a_child_span_of_its_turn(gemini_settings, fake, spans):
    """A tool of a real external MCP server (stdio, the `mcp` package) is traced like our own tools."""
    fake.script(handoff_turn(), function_call_turn("mcp_fake__echo", {"text": "hello"}), text_turn("It echoed."))
    async with live(mcp_settings(gemini_settings, [STDIO])) as client:
        stream = await chat(client, {"message": "echo hello"})
    assert stream.of("tool_result")[0]["result"] == {"text": "echo: hello"}
    finished = list(spans.get_finished_spans())
    [turn] = [s for s in finished if s.name == "chat turn"]
    [tool] = [s for s in finished if s.name == "execute_tool mcp_fake__echo"]
    assert tool.parent is not None and tool.parent.span_id == turn.context.span_id
    attributes = dict(tool.attributes or {})
    assert attributes["gen_ai.tool.name"] == "mcp_fake__echo"
    assert attributes["gen_ai.agent.name"] == TASK_ASSISTANT
    assert attributes["gen_ai.tool.call.id"] == stream.of("tool_call")[0]["id"]
    assert tool.status.is_ok, "the call returned"
    assert "hello" not in " ".join(str(v) for v in attributes.values()), "no arguments or output recorded"
