"""The truncated-stream guard relies on private LiteLLM / Agents SDK internals: fail loudly when an upgrade moves them.

The behaviour through the whole server is covered by tests/test_chat_stream.py (truncated and dropped streams); these
tests pin the seams `backend/chat/litellm_guard.py` uses, and prove the guard really attaches to a real Gemini stream
(it must never turn itself off silently).
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import weakref
from typing import Any

import pytest
from agents.extensions.models.litellm_model import LitellmModel
from agents.models.interface import ModelTracing
from litellm.litellm_core_utils.streaming_handler import CustomStreamWrapper
from litellm.llms.vertex_ai.gemini import vertex_and_google_ai_studio_gemini as gemini_module

from backend.chat import litellm_guard
from backend.chat.litellm_guard import GuardedLitellmModel, TruncatedStreamError
from backend.chat.model import build_model
from backend.settings import load_settings
from tests.fakes.gemini import FakeGemini, text_turn, truncated_turn


def test_the_sdk_seams_are_where_the_guard_expects_them():
    fetch = LitellmModel._fetch_response
    assert inspect.iscoroutinefunction(fetch)
    assert "stream" in inspect.signature(fetch).parameters
    assert "return response, ret" in inspect.getsource(fetch)  # streaming: (response, LiteLLM's stream)
    assert "self._fetch_response(" in inspect.getsource(LitellmModel.stream_response)
    assert inspect.iscoroutinefunction(LitellmModel._maybe_aclose)


def test_the_litellm_seams_are_where_the_guard_expects_them():
    wrapper = inspect.signature(CustomStreamWrapper.__init__).parameters
    assert {"completion_stream", "make_call"} <= set(wrapper)
    iterator = gemini_module.ModelResponseIterator
    assert iterator.__module__.endswith("gemini")
    assert list(inspect.signature(iterator.chunk_parser).parameters) == ["self", "chunk"]
    # Called through the instance, so the guard's instance attribute wraps it.
    assert "self.chunk_parser(chunk=" in inspect.getsource(iterator)


gemini_guards: list[Any] = []
"""The guards the last `_stream` made (module level: a class made per call would hold them until a collection)."""


class _Recording(GuardedLitellmModel):
    async def _fetch_response(self, *args: Any, **kwargs: Any) -> Any:
        fetched = await super()._fetch_response(*args, **kwargs)
        gemini_guards.append(fetched[1])
        return fetched


async def _stream(gemini: FakeGemini) -> tuple[list[Any], list[Any]]:
    """Stream one turn through the production model; returns (events, the guards the model made)."""
    gemini_guards.clear()

    settings = load_settings(gemini_api_key="k", gemini_api_base=gemini.base_url, offline_model=False, model_retries=0)
    model, model_settings = build_model(settings)
    assert type(model) is GuardedLitellmModel
    model.__class__ = _Recording
    events = [
        e
        async for e in model.stream_response(
            None, [{"role": "user", "content": "hi"}], model_settings, [], None, [], ModelTracing.DISABLED
        )
    ]
    return events, list(gemini_guards)


async def test_the_guard_attaches_to_a_real_gemini_stream_and_lets_a_finished_one_through():
    async with FakeGemini() as gemini:
        gemini.script(text_turn(["Hel", "lo"]))
        events, guards = await _stream(gemini)
    assert [type(g) for g in guards] == [litellm_guard._FinishGuard]
    assert guards[0]._watching, "the guard no longer sees Gemini's raw chunks: LiteLLM's internals changed"
    assert guards[0]._finished
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "Hello"


async def test_the_guard_fails_a_truncated_gemini_stream():
    async with FakeGemini() as gemini:
        gemini.script(truncated_turn(["Par", "tial"]))
        with pytest.raises(TruncatedStreamError):
            await _stream(gemini)


@pytest.mark.parametrize("turn", [text_turn(["Hel", "lo"]), truncated_turn(["Par", "tial"])], ids=["finished", "cut"])
async def test_the_guard_takes_its_wrappers_off_when_the_stream_ends(turn):
    # Left on, the wrappers close over the guard, which holds the stream: a reference cycle that keeps the whole
    # LiteLLM stream (chunks, HTTP response) alive until a full collection. Checked with the collector off.
    gc.disable()
    try:
        async with FakeGemini() as gemini:
            gemini.script(turn)
            with contextlib.suppress(TruncatedStreamError):
                await _stream(gemini)
            guard = gemini_guards.pop()
        inner = guard._inner
        assert "make_call_and_watch" not in getattr(inner.make_call, "__qualname__", ""), "LiteLLM's own opener is back"
        assert guard._watched is None and guard._make_call is None
        ref = weakref.ref(guard)
        del guard
        assert ref() is None, "the guard is still referenced: a cycle keeps the stream alive"
    finally:
        gc.enable()
