"""The fake Gemini server drives the real stack: Agents SDK -> LitellmModel -> LiteLLM's gemini/ route -> HTTP."""

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no model-cost-map download at import
os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")  # no trace export to api.openai.com

import asyncio
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import litellm
import openai
import pytest
from agents import (
    Agent,
    ModelSettings,
    ReasoningItem,
    Runner,
    RunResultStreaming,
    ToolCallItem,
    ToolCallOutputItem,
    function_tool,
)
from agents.extensions.models.litellm_model import LitellmModel
from litellm.exceptions import MidStreamFallbackError
from openai.types.responses import ResponseTextDeltaEvent

from tests.fakes.gemini import (
    FakeGemini,
    drop_turn,
    error_turn,
    function_call_turn,
    load_chunks,
    load_text,
    load_turn,
    mid_stream_error_turn,
    raw_turn,
    text_turn,
    truncated_turn,
)

litellm.suppress_debug_info = True

# litellm 1.109.1 triggers pydantic "ReadOnly qualifier" UserWarnings on first use; they are not ours.
pytestmark = pytest.mark.filterwarnings("ignore:.*ReadOnly.*qualifier:UserWarning")

MODEL = "gemini/gemini-2.5-flash"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def fake():
    async with FakeGemini() as server:
        yield server


def make_agent(fake: FakeGemini, tools: list[Any] | None = None) -> Agent:
    return Agent(
        name="assistant",
        instructions="Be brief.",
        tools=tools or [],
        model=LitellmModel(MODEL, base_url=fake.base_url, api_key="test-key"),
        model_settings=ModelSettings(include_usage=True),
    )


async def drain(result: RunResultStreaming, deltas: list[str], items: list[Any] | None = None) -> None:
    """Consume the stream, appending text deltas (and run items) as they arrive."""
    async for ev in result.stream_events():
        if ev.type == "raw_response_event" and isinstance(ev.data, ResponseTextDeltaEvent):
            deltas.append(ev.data.delta)
        elif ev.type == "run_item_stream_event" and items is not None:
            items.append(ev.item)


def parts_with(request: dict[str, Any], *keys: str) -> list[dict[str, Any]]:
    """All parts in a recorded request's contents that carry one of ``keys`` (snake_case or camelCase)."""
    return [
        {"role": content["role"], **part}
        for content in request["contents"]
        for part in content["parts"]
        if any(k in part for k in keys)
    ]


# ---- happy paths ---------------------------------------------------------------------------------------------------


async def test_streamed_text_deltas_usage_and_recorded_request(fake: FakeGemini) -> None:
    chunks = ["Hel", "lo ", "from ", "the fake."]
    fake.script(text_turn(chunks, usage=(12, 4)))

    result = Runner.run_streamed(make_agent(fake), "hi")
    deltas: list[str] = []
    await asyncio.wait_for(drain(result, deltas), 10)

    assert deltas == chunks
    assert result.final_output == "Hello from the fake."
    usage = result.context_wrapper.usage
    assert (usage.requests, usage.input_tokens, usage.output_tokens) == (1, 12, 4)
    assert (fake.completed, fake.disconnects) == (1, 0)

    (req,) = fake.requests
    assert req["model"] == "gemini-2.5-flash"
    assert req["method"] == "streamGenerateContent" and req["stream"] is True
    assert req["path"] == "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    assert req["api_key"] == "test-key" == req["headers"]["x-goog-api-key"]
    assert req["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]
    assert req["system_instruction"] == {"parts": [{"text": "Be brief."}]}


async def test_string_text_is_split_into_words_and_default_turn_serves_forever(fake: FakeGemini) -> None:
    fake.script(text_turn("It is sunny."))
    deltas: list[str] = []
    await drain(Runner.run_streamed(make_agent(fake), "weather?"), deltas)
    assert deltas == ["It ", "is ", "sunny."]

    for _ in range(2):  # queue empty: the built-in default answers "ok"
        result = Runner.run_streamed(make_agent(fake), "again")
        await drain(result, [])
        assert result.final_output == "ok"

    fake.default_turn = load_turn(6, tokens_per_chunk=4)
    deltas = []
    result = Runner.run_streamed(make_agent(fake), "bench")
    await drain(result, deltas)
    assert deltas == load_chunks(6, 4) == ["tok0 tok1 tok2 tok3 ", "tok4 tok5"]
    assert result.final_output == load_text(6) == fake.default_turn.text
    assert result.context_wrapper.usage.output_tokens == 6
    assert fake.completed == 4 and len(fake.requests) == 4


async def test_function_call_then_text_runs_the_real_tool_and_replays_history(fake: FakeGemini) -> None:
    calls: list[tuple[int, int]] = []

    @function_tool
    def add(a: int, b: int) -> str:
        """Add two integers."""
        calls.append((a, b))
        return str(a + b)

    fake.script(
        function_call_turn("add", {"a": 2, "b": 3}, thought_signature="c2lnLTE="),
        text_turn(["The sum ", "is 5."]),
    )
    result = Runner.run_streamed(make_agent(fake, [add]), "What is 2 + 3?")
    deltas: list[str] = []
    items: list[Any] = []
    await asyncio.wait_for(drain(result, deltas, items), 10)

    (called,) = [i for i in items if isinstance(i, ToolCallItem)]
    assert called.raw_item.name == "add"
    assert json.loads(called.raw_item.arguments) == {"a": 2, "b": 3}
    (output,) = [i for i in items if isinstance(i, ToolCallOutputItem)]
    assert output.output == "5"
    assert output.raw_item["call_id"] == called.raw_item.call_id
    assert calls == [(2, 3)]
    assert deltas == ["The sum ", "is 5."]
    assert result.final_output == "The sum is 5."
    usage = result.context_wrapper.usage
    assert (usage.requests, usage.input_tokens, usage.output_tokens) == (2, 20 + 10, 7 + 2)

    first, second = fake.requests
    assert first["tools"][0]["function_declarations"][0]["name"] == "add"
    (call_part,) = parts_with(second, "function_call", "functionCall")
    call = call_part.get("function_call") or call_part["functionCall"]
    assert call_part["role"] == "model"
    assert call["name"] == "add" and call["args"] == {"a": 2, "b": 3}
    assert call_part.get("thoughtSignature", call_part.get("thought_signature")) == "c2lnLTE="
    (resp_part,) = parts_with(second, "function_response", "functionResponse")
    response = resp_part.get("function_response") or resp_part["functionResponse"]
    assert resp_part["role"] == "user"
    assert response["name"] == "add"
    assert "5" in json.dumps(response["response"])


async def test_env_base_url_reaches_the_fake_with_an_unchanged_production_model(
    fake: FakeGemini, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEMINI_API_BASE", fake.base_url)
    monkeypatch.setenv("GEMINI_API_KEY", "env-key")
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)  # it would win over GEMINI_API_KEY
    fake.script(text_turn("via env"))
    agent = Agent(name="assistant", model=LitellmModel(MODEL), model_settings=ModelSettings(include_usage=True))
    result = Runner.run_streamed(agent, "hi")
    await asyncio.wait_for(drain(result, []), 10)
    assert result.final_output == "via env"
    assert fake.requests[0]["api_key"] == "env-key"


async def test_thinking_parts_become_a_reasoning_item(fake: FakeGemini) -> None:
    fake.script(text_turn(["Four."], thinking=["Two plus two ", "is four."], usage=(5, 1, 3)))
    result = Runner.run_streamed(make_agent(fake), "2+2?")
    deltas: list[str] = []
    items: list[Any] = []
    await drain(result, deltas, items)
    assert deltas == ["Four."]
    assert result.final_output == "Four."
    reasoning = [i for i in items if isinstance(i, ReasoningItem)]
    assert reasoning, items
    assert "".join(s.text for s in reasoning[0].raw_item.summary) == "Two plus two is four."
    usage = result.context_wrapper.usage
    assert usage.output_tokens_details.reasoning_tokens == 3


async def test_unary_generate_content_returns_the_merged_turn(fake: FakeGemini) -> None:
    fake.script(text_turn(["Hel", "lo."], usage=(3, 2)), function_call_turn("add", {"a": 1, "b": 2}))
    messages = [{"role": "user", "content": "hi"}]
    kwargs: dict[str, Any] = {"model": MODEL, "api_base": fake.base_url, "api_key": "k"}
    resp = await litellm.acompletion(messages=messages, **kwargs)
    assert resp.choices[0].message.content == "Hello."
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (3, 2)
    resp = await litellm.acompletion(messages=messages, **kwargs)
    (tool_call,) = resp.choices[0].message.tool_calls
    assert tool_call.function.name == "add" and json.loads(tool_call.function.arguments) == {"a": 1, "b": 2}
    assert [r["method"] for r in fake.requests] == ["generateContent"] * 2
    assert fake.requests[0]["path"] == "/v1beta/models/gemini-2.5-flash:generateContent"


# ---- failures ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "google_status", "seen_status", "original"),
    [
        (429, "RESOURCE_EXHAUSTED", 429, litellm.RateLimitError),
        # litellm 1.109.1 maps Google's 503 to InternalServerError, so the status code the app sees is 500.
        (503, "UNAVAILABLE", 500, litellm.InternalServerError),
        (400, "INVALID_ARGUMENT", 400, None),
    ],
)
async def test_http_error_turn_surfaces_with_status_code(
    fake: FakeGemini, status: int, google_status: str, seen_status: int, original: type[Exception] | None
) -> None:
    fake.script(error_turn(status))
    result = Runner.run_streamed(make_agent(fake), "hi")
    deltas: list[str] = []
    with pytest.raises(openai.APIStatusError) as info:
        await asyncio.wait_for(drain(result, deltas), 10)
    # 429/5xx arrive as litellm MidStreamFallbackError (a ServiceUnavailableError) carrying the status and the
    # original exception; 400 arrives as litellm.BadRequestError. All subclass openai.APIStatusError.
    assert info.value.status_code == seen_status
    assert google_status in str(info.value)
    if original is None:
        assert isinstance(info.value, litellm.BadRequestError)
    else:
        assert isinstance(info.value, MidStreamFallbackError)
        assert isinstance(info.value.original_exception, original)
    assert deltas == []
    assert len(fake.requests) == 1  # no retries by default


async def test_mid_stream_error_raises_after_the_deltas(fake: FakeGemini) -> None:
    fake.script(mid_stream_error_turn(["Par", "tial "], status=500))
    result = Runner.run_streamed(make_agent(fake), "hi")
    deltas: list[str] = []
    with pytest.raises(MidStreamFallbackError) as info:
        await asyncio.wait_for(drain(result, deltas), 10)
    # litellm 1.109.1: the in-band {"error": {...}} event raises MidStreamFallbackError(status_code=500) whose
    # original_exception is an InternalServerError; the deltas before it were already streamed.
    assert deltas == ["Par", "tial "]
    assert info.value.status_code == 500
    assert isinstance(info.value.original_exception, litellm.InternalServerError)
    assert "INTERNAL" in str(info.value)
    assert fake.completed == 1


async def test_dropped_connection_raises_after_the_deltas(fake: FakeGemini) -> None:
    fake.script(drop_turn(["Par", "tial "]))
    result = Runner.run_streamed(make_agent(fake), "hi")
    deltas: list[str] = []
    with pytest.raises(MidStreamFallbackError) as info:
        await asyncio.wait_for(drain(result, deltas), 10)
    # litellm 1.109.1: the aborted chunked body surfaces as MidStreamFallbackError with status_code 500 whose
    # original_exception is a litellm.APIConnectionError ("Response payload is not completed: TransferEncodingError").
    assert deltas == ["Par", "tial "]
    assert info.value.status_code == 500
    assert isinstance(info.value.original_exception, litellm.APIConnectionError)
    assert fake.disconnects == 0  # the fake dropped the client, not the other way round


async def test_truncated_last_event_does_not_hang(fake: FakeGemini) -> None:
    fake.script(truncated_turn(["Par", "tial "]))
    result = Runner.run_streamed(make_agent(fake), "hi")
    deltas: list[str] = []
    await asyncio.wait_for(drain(result, deltas), 10)
    # litellm 1.109.1: the invalid last `data:` line is dropped silently; the run finishes normally and the partial
    # text becomes the final output (no finishReason is needed). litellm 1.83.0 busy-looped forever here.
    assert deltas == ["Par", "tial "]
    assert result.final_output == "Partial "
    assert fake.completed == 1


# ---- cancellation --------------------------------------------------------------------------------------------------


async def test_cancel_after_first_delta_closes_the_upstream_stream(fake: FakeGemini) -> None:
    fake.script(text_turn([f"c{i} " for i in range(10)], delay=0.3))
    result = Runner.run_streamed(make_agent(fake), "hi")
    deltas: list[str] = []
    async for ev in result.stream_events():
        if ev.type == "raw_response_event" and isinstance(ev.data, ResponseTextDeltaEvent):
            deltas.append(ev.data.delta)
            result.cancel()
    assert deltas == ["c0 "]
    assert result.final_output is None
    # litellm 1.109.1 closes the upstream response on cancel; the fake is sleeping 0.3 s between chunks then
    assert await fake.wait_until(lambda f: f.disconnects == 1, within=2.0), fake.state()
    assert fake.completed == 0


async def test_client_going_away_during_first_delay_is_counted_promptly(fake: FakeGemini) -> None:
    fake.script(text_turn("never sent", first_delay=30.0))
    async with aiohttp.ClientSession() as session:
        url = f"{fake.base_url}/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        resp = await session.post(url, json={"contents": []})
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        resp.close()  # drops the connection while the fake sleeps before the first chunk
    assert await fake.wait_until(lambda f: f.disconnects == 1, within=1.0), fake.state()
    assert fake.completed == 0


# ---- wire format, control API and standalone mode ------------------------------------------------------------------


async def test_wire_format_and_control_api(fake: FakeGemini) -> None:
    async with aiohttp.ClientSession(fake.root_url) as http:
        script = [
            {"kind": "text", "text": ["a", "b"], "usage": [1, 2]},
            {"kind": "error", "status": 429},
            {"kind": "function_call", "name": "add_task", "args": {"title": "x"}},
        ]
        async with http.post("/_control/script", json=script) as r:
            assert r.status == 200 and await r.json() == {"queued": 3}
        async with http.post("/_control/script", json=[{"kind": "nope"}]) as r:
            assert r.status == 400

        url = "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
        headers = {"x-goog-api-key": "k1"}
        async with http.post(
            url, json={"contents": [{"role": "user", "parts": [{"text": "q"}]}]}, headers=headers
        ) as r:
            assert r.status == 200
            body = await r.text()
        events = body.split("\r\n\r\n")
        assert events[-1] == ""
        payloads = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
        assert [p["candidates"][0]["content"]["parts"] for p in payloads] == [[{"text": "a"}], [{"text": "b"}]]
        assert "finishReason" not in payloads[0]["candidates"][0]
        assert payloads[1]["candidates"][0]["finishReason"] == "STOP"
        assert payloads[1]["usageMetadata"] == {"promptTokenCount": 1, "candidatesTokenCount": 2, "totalTokenCount": 3}
        assert payloads[0]["modelVersion"] == "gemini-2.5-pro"

        async with http.post(url, json={}) as r:
            assert r.status == 429
            assert await r.json() == {
                "error": {
                    "code": 429,
                    "message": "Resource has been exhausted (e.g. check quota).",
                    "status": "RESOURCE_EXHAUSTED",
                }
            }

        async with http.post("/v1beta/models/gemini-2.5-pro:generateContent", json={}) as r:
            merged = await r.json()
        assert merged["candidates"][0]["content"]["parts"] == [
            {"functionCall": {"name": "add_task", "args": {"title": "x"}}}
        ]

        async with http.get("/_control/state") as r:
            state = await r.json()
        assert state["requests"] == 3 and state["completed"] == 3 and state["queued"] == 0
        assert state["last_request"]["method"] == "generateContent"
        assert fake.requests[0]["contents"][0]["parts"] == [{"text": "q"}]
        assert fake.requests[0]["api_key"] == "k1"

        async with http.post("/_control/script", json={"turns": [], "default": {"kind": "text", "text": "dflt"}}) as r:
            assert r.status == 200
        async with http.post("/v1beta/models/m:generateContent", json={}) as r:
            assert (await r.json())["candidates"][0]["content"]["parts"] == [{"text": "dflt"}]

        async with http.post("/_control/reset") as r:
            assert r.status == 200
        async with http.get("/_control/state") as r:
            assert await r.json() == {
                "requests": 0,
                "disconnects": 0,
                "completed": 0,
                "queued": 0,
                "active": 0,
                "last_request": None,
            }
        async with http.post("/v1beta/models/m:generateContent", json={}) as r:
            assert (await r.json())["candidates"][0]["content"]["parts"] == [{"text": "ok"}]


def sse(text: str, *, finish: bool = False) -> str:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}}
    if finish:
        candidate["finishReason"] = "STOP"
    return f"data: {json.dumps({'candidates': [candidate]})}\r\n\r\n"


async def test_raw_turn_writes_bytes_verbatim(fake: FakeGemini) -> None:
    split = sse("split ")
    fake.script(
        # two events in one TCP write, then one event cut across two writes 50 ms apart: LiteLLM reassembles both
        raw_turn([(sse("two ") + sse("in one ")).encode(), split[:25], 0.05, split[25:], sse("end", finish=True)]),
        # an SSE comment line (which Google never sends) switches LiteLLM 1.109.1's gemini parser into its
        # "accumulated JSON" mode for good: every later event is swallowed and the run ends "successfully" with ""
        raw_turn([b": keep-alive\r\n\r\n", sse("lost", finish=True)]),
    )
    deltas: list[str] = []
    result = Runner.run_streamed(make_agent(fake), "hi")
    await drain(result, deltas)
    assert deltas == ["two ", "in one ", "split ", "end"]

    deltas = []
    result = Runner.run_streamed(make_agent(fake), "hi")
    await drain(result, deltas)
    assert deltas == [] and result.final_output == ""


async def test_standalone_process_serves_script_file_and_stops_on_sigterm(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "turns.json"
    script.write_text(json.dumps([{"kind": "text", "text": "from file"}]))
    cmd = [sys.executable, "-m", "tests.fakes.gemini", "--port", str(port), "--script", str(script)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            for _ in range(100):
                try:
                    async with http.get("/_control/state") as r:
                        assert (await r.json())["queued"] == 1
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            else:
                pytest.fail("standalone fake did not start")
            async with http.post("/v1beta/models/m:generateContent", json={}) as r:
                assert (await r.json())["candidates"][0]["content"]["parts"] == [{"text": "from file"}]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0, out
    assert b"fake Gemini listening on" in out
