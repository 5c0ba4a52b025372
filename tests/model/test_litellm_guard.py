"""The model's stream relies on private LiteLLM / Agents SDK internals: fail loudly when an upgrade moves them.

The behaviour through the whole server is covered by tests/chat/test_chat_stream.py (truncated and dropped streams) and
tests/model/test_model_parity.py (our model against the SDK's `LitellmModel`); these tests pin the seams
`backend/chat/litellm_guard.py` uses, the assumption the finish-chunk design rests on (LiteLLM's finish chunk comes
after the upstream stream ended, with the provider's usage), and prove the guard really attaches to a real Gemini
stream on every model (it must never turn itself off silently).
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import json
import weakref
from collections.abc import Iterator
from typing import Any

import litellm
import pytest
from agents.extensions.models.litellm_model import LitellmModel
from agents.models.chatcmpl_stream_handler import ChatCmplStreamHandler
from agents.models.interface import ModelTracing
from litellm.litellm_core_utils.streaming_handler import CustomStreamWrapper
from litellm.llms.vertex_ai.gemini import vertex_and_google_ai_studio_gemini as gemini_module
from litellm.types.utils import UnreportedUsage

from backend.chat import litellm_guard, litellm_model
from backend.chat.litellm_guard import GuardedLitellmModel, GuardedStream, TruncatedStreamError, finish_usage
from backend.chat.litellm_model import FinishChunkLitellmModel
from backend.chat.model import build_model
from backend.settings import load_settings
from backend.usage.ledger import price
from tests.fakes.gemini import FakeGemini, raw_turn, text_turn, truncated_turn

MODEL = "gemini/gemini-2.5-flash"
SOURCES = ["finish_chunk", "usage_chunk", "litellm_model"]


def test_the_sdk_seams_are_where_the_model_expects_them():
    fetch = LitellmModel._fetch_response
    assert inspect.iscoroutinefunction(fetch)
    # `fetch_stream` passes these positionally, then `stream=True` and `prompt=`.
    assert list(inspect.signature(fetch).parameters)[:11] == [
        "self",
        "system_instructions",
        "input",
        "model_settings",
        "tools",
        "output_schema",
        "handoffs",
        "span",
        "tracing",
        "stream",
        "prompt",
    ]
    assert "return response, ret" in inspect.getsource(fetch)  # streaming: (response, LiteLLM's stream)
    assert 'stream_options = {"include_usage"' in inspect.getsource(fetch)  # only when include_usage is set
    assert "self._fetch_response(" in inspect.getsource(LitellmModel.stream_response)
    assert inspect.iscoroutinefunction(LitellmModel._maybe_aclose)
    handle = inspect.signature(ChatCmplStreamHandler.handle_stream).parameters
    assert list(handle)[:3] == ["response", "stream", "model"]
    assert "ChatCmplStreamHandler.handle_stream(" in inspect.getsource(litellm_guard.stream_events)


def test_the_litellm_seams_are_where_the_guard_expects_them():
    wrapper = inspect.signature(CustomStreamWrapper.__init__).parameters
    assert {"completion_stream", "make_call"} <= set(wrapper)
    iterator = gemini_module.ModelResponseIterator
    assert iterator.__module__.endswith("gemini")
    assert list(inspect.signature(iterator.chunk_parser).parameters) == ["self", "chunk"]
    # Called through the instance, so the guard's instance attribute wraps it.
    assert "self.chunk_parser(chunk=" in inspect.getsource(iterator)
    assert issubclass(UnreportedUsage, litellm.Usage)


async def _chunks(gemini: FakeGemini, stream_options: dict[str, bool] | None) -> list[tuple[Any, int]]:
    """LiteLLM's chunks for one call, each with the number of turns the fake had finished writing when it arrived."""
    stream = await litellm.acompletion(
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options=stream_options,
        api_key="k",
        base_url=gemini.base_url,
    )
    return [(chunk, gemini.completed) async for chunk in stream]


def _event(text: str, *, finish: bool = False) -> bytes:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}
    event: dict[str, Any] = {"candidates": [candidate]}
    if finish:
        candidate["finishReason"] = "STOP"
        event["usageMetadata"] = {"promptTokenCount": 12, "candidatesTokenCount": 2, "totalTokenCount": 14}
    return b"data: " + json.dumps(event).encode() + b"\r\n\r\n"


async def test_the_finish_chunk_comes_after_the_upstream_stream_ended_and_carries_the_usage():
    # The design rests on this: without stream_options LiteLLM sends its finish chunk only once the provider's
    # stream has ended (here the fake pauses after Gemini's last event before ending the body), so closing the
    # stream at that chunk loses nothing, and the chunk carries the provider's usage in `_hidden_params`.
    async with FakeGemini() as gemini:
        gemini.script(raw_turn([_event("Hel"), _event("lo", finish=True), 0.3]))
        chunks = await _chunks(gemini, None)
    *text, (finish, completed_at_finish) = chunks
    assert [c.choices[0].delta.content for c, _ in text] == ["Hel", "lo"]
    assert [done for _, done in text] == [0, 0], "the fake ended early: the ordering below proves nothing"
    assert finish.choices[0].finish_reason == "stop"
    assert completed_at_finish == 1, "LiteLLM sent its finish chunk before the upstream stream ended"
    assert all(finish_usage(c) is None for c, _ in text)
    usage = finish_usage(finish)
    assert isinstance(usage, litellm.Usage) and not isinstance(usage, UnreportedUsage)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (12, 2, 14)


async def test_with_include_usage_the_usage_chunk_comes_last_and_no_chunk_carries_hidden_usage():
    async with FakeGemini() as gemini:
        gemini.script(text_turn(["Hel", "lo"], usage=(12, 2)))
        chunks = [c for c, _ in await _chunks(gemini, {"include_usage": True})]
    assert [getattr(c, "usage", None) is not None for c in chunks] == [False, False, False, True]
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (12, 2)
    assert all(finish_usage(c) is None for c in chunks)


async def test_a_call_costs_what_litellm_charges_on_its_own_path():
    # LiteLLM's usage chunk (include_usage) carries the cost LiteLLM computed; the usage ledger's `price` of the usage
    # our model read from the finish chunk of the same turn must agree.
    async with FakeGemini() as gemini:
        gemini.script(text_turn(["Hel", "lo"], usage=(12, 2)), text_turn(["Hel", "lo"], usage=(12, 2)))
        charged = (await _chunks(gemini, {"include_usage": True}))[-1][0].usage.cost
        reported = finish_usage((await _chunks(gemini, None))[-1][0])
    assert isinstance(reported, litellm.Usage)
    assert charged > 0
    cost, priced = price(MODEL, reported.prompt_tokens, reported.completion_tokens, 0)
    assert priced and cost == pytest.approx(charged)
    assert price("gemini/no-such-model", reported.prompt_tokens, reported.completion_tokens, 0) == (0.0, False)


@contextlib.contextmanager
def _rebuilds() -> Iterator[list[int]]:
    """Count LiteLLM's end-of-stream rebuilds (`litellm.stream_chunk_builder`, looked up at each call)."""
    calls: list[int] = []
    original = litellm.stream_chunk_builder

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    litellm.stream_chunk_builder = counting
    try:
        yield calls
    finally:
        litellm.stream_chunk_builder = original


recorded: list[GuardedStream] = []
"""The streams the last `_stream` made (module level: a class made per call would hold them until a collection)."""


class _Recording(GuardedStream):
    __slots__ = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        recorded.append(self)


async def _stream(gemini: FakeGemini, source: str, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Stream one turn through the production model for `source`; `recorded` gets the guards it made."""
    recorded.clear()
    monkeypatch.setattr(litellm_guard, "GuardedStream", _Recording)
    monkeypatch.setattr(litellm_model, "GuardedStream", _Recording)
    settings = load_settings(
        gemini_api_key="k",
        gemini_api_base=gemini.base_url,
        offline_model=False,
        model_retries=0,
        model_usage_source=source,
    )
    model, model_settings = build_model(settings)
    expected = GuardedLitellmModel if source == "litellm_model" else FinishChunkLitellmModel
    assert type(model) is expected
    return [
        e
        async for e in model.stream_response(
            None, [{"role": "user", "content": "hi"}], model_settings, [], None, [], ModelTracing.DISABLED
        )
    ]


@pytest.mark.parametrize("source", SOURCES)
async def test_the_guard_attaches_to_a_real_gemini_stream_and_lets_a_finished_one_through(source, monkeypatch):
    async with FakeGemini() as gemini:
        gemini.script(text_turn(["Hel", "lo"], usage=(12, 2)))
        events = await _stream(gemini, source, monkeypatch)
    assert [type(g) for g in recorded] == [_Recording]
    assert recorded[0]._watching, "the guard no longer sees Gemini's raw chunks: LiteLLM's internals changed"
    assert recorded[0]._finished
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "Hello"
    usage = events[-1].response.usage
    assert events[-1].type == "response.completed"
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (12, 2, 14)


@pytest.mark.parametrize("source", SOURCES)
async def test_the_guard_fails_a_truncated_gemini_stream(source, monkeypatch):
    async with FakeGemini() as gemini:
        gemini.script(truncated_turn(["Par", "tial"]))
        with pytest.raises(TruncatedStreamError):
            await _stream(gemini, source, monkeypatch)


@pytest.mark.parametrize(("source", "rebuilds"), [("finish_chunk", 0), ("usage_chunk", 1), ("litellm_model", 2)])
async def test_our_model_ends_the_stream_before_litellm_rebuilds_the_reply(source, rebuilds, monkeypatch):
    # The point of our model: LiteLLM rebuilds a streamed reply once for its usage chunk and once more for its
    # success logging and cost; ending at the finish chunk skips both, ending after the usage chunk the second.
    async with FakeGemini() as gemini:
        gemini.script(text_turn(["Hel", "lo"], usage=(12, 2)))
        with _rebuilds() as calls:
            await _stream(gemini, source, monkeypatch)
            await gemini.wait_until(lambda g: g.completed == 1)
    assert len(calls) == rebuilds
    assert recorded[0]._inner._closed or source == "litellm_model"


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("turn", [text_turn(["Hel", "lo"]), truncated_turn(["Par", "tial"])], ids=["finished", "cut"])
async def test_the_guard_takes_its_wrappers_off_when_the_stream_ends(turn, source, monkeypatch):
    # Left on, the wrappers close over the guard, which holds the stream: a reference cycle that keeps the whole
    # LiteLLM stream (chunks, HTTP response) alive until a full collection. Checked with the collector off.
    gc.disable()
    try:
        async with FakeGemini() as gemini:
            gemini.script(turn)
            with contextlib.suppress(TruncatedStreamError):
                await _stream(gemini, source, monkeypatch)
            guard = recorded.pop()
        inner = guard._inner
        assert "make_call_and_watch" not in getattr(inner.make_call, "__qualname__", ""), "LiteLLM's own opener is back"
        assert guard._watched is None and guard._make_call is None
        ref = weakref.ref(guard)
        del guard
        assert ref() is None, "the guard is still referenced: a cycle keeps the stream alive"
    finally:
        gc.enable()
