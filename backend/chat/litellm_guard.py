"""The one place that relies on private LiteLLM and Agents SDK internals: the model's stream and its guard.

Two jobs live here, both on names neither library documents:

* **Ending each streamed call at the provider's finish** (`FinishChunkLitellmModel` in `litellm_model.py`). Without
  ``stream_options`` LiteLLM sends its finish chunk only after the upstream stream ended, with the provider's usage in
  the chunk's ``_hidden_params["usage"]``; the next read would rebuild the whole response (``stream_chunk_builder``),
  compute its cost and dispatch the success logging. `GuardedStream` stops there and closes the stream, so none of
  that runs. With ``include_usage`` (the documented fallback) it stops right after the usage chunk instead, which
  skips LiteLLM's second rebuild and the logging dispatch.
* **The truncated-stream guard.** A Gemini reply cut off upstream must not be stored and shown as complete. LiteLLM
  1.109 drops an unparsable last SSE line, ends the stream normally and sends its finish chunk with
  ``finish_reason="stop"`` anyway; its own clean-EOF check (``CustomStreamWrapper._should_fail_on_clean_eof``) covers
  OpenAI-compatible streams only, and neither library has a public hook that sees the provider's raw chunks. So
  `GuardedStream` watches them and fails a stream that ends without Gemini's ``finishReason``.

Names used:

* ``LitellmModel._fetch_response`` (Agents SDK): builds the request (the SDK's ``Converter``, Gemini's tool-message
  ordering and thought signatures, ``extra_args``, reasoning effort, headers, retry knobs), calls
  ``litellm.acompletion`` and returns ``(response, stream)`` when streaming;
* ``LitellmModel._maybe_aclose`` (Agents SDK): closes the LiteLLM stream;
* ``ChatCmplStreamHandler`` (Agents SDK, ``agents.models.chatcmpl_stream_handler``, not re-exported): chat-completions
  chunks to Responses events, as ``LitellmModel`` uses it;
* ``ModelResponseStream._hidden_params["usage"]`` (LiteLLM): the provider's usage on the finish chunk;
* ``CustomStreamWrapper.completion_stream`` / ``.make_call`` (LiteLLM): the provider iterator, or the coroutine that
  opens it on the first chunk;
* the Gemini ``ModelResponseIterator.chunk_parser(chunk=...)`` (LiteLLM), which its ``__anext__`` calls through the
  instance, so an instance attribute can wrap it.

``tests/model/test_litellm_guard.py`` fails loudly when an upgrade changes any of these (and when the guard stops
attaching to a real Gemini stream, or the finish chunk stops carrying the usage), so nothing here can silently turn
itself off.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Literal, cast

from agents import Handoff, ModelSettings, Tool, TResponseInputItem
from agents.agent_output import AgentOutputSchemaBase
from agents.extensions.models.litellm_model import LitellmModel
from agents.items import TResponseStreamEvent
from agents.models.chatcmpl_stream_handler import ChatCmplStreamHandler
from agents.models.interface import ModelTracing
from agents.tracing import GenerationSpanData, Span
from litellm.types.utils import UnreportedUsage
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseFunctionToolCall,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
)

from backend.storable import storable_json_text

__all__ = [
    "ChatCmplStreamHandler",
    "GuardedLitellmModel",
    "GuardedStream",
    "StopAt",
    "TruncatedStreamError",
    "fetch_stream",
    "finish_usage",
    "storable_calls",
    "stream_events",
]

StopAt = Literal["end", "finish_chunk", "usage_chunk"]
"""Where `GuardedStream` ends LiteLLM's stream: at its natural end, at the finish chunk, or after the usage chunk."""

HIDDEN_PARAMS = "_hidden_params"


class TruncatedStreamError(Exception):
    """The provider's stream ended before the provider said the reply was finished."""


def finish_usage(chunk: object) -> object | None:
    """The provider's usage LiteLLM put on its finish chunk (``_hidden_params["usage"]``), if this is that chunk.

    Args:
        chunk: A chunk of LiteLLM's stream, read without ``stream_options``.

    Returns:
        LiteLLM's ``Usage`` (an ``UnreportedUsage`` of zeros when the provider reported none) on the finish chunk;
        None on every other chunk.
    """
    hidden = getattr(chunk, HIDDEN_PARAMS, None)
    if isinstance(hidden, Mapping):
        return hidden.get("usage")
    return getattr(hidden, "usage", None) if hidden is not None else None


async def fetch_stream(
    model: LitellmModel,
    system_instructions: str | None,
    input: str | list[TResponseInputItem],
    model_settings: ModelSettings,
    tools: list[Tool],
    output_schema: AgentOutputSchemaBase | None,
    handoffs: list[Handoff[Any, Any]],
    span: Span[GenerationSpanData],
    tracing: ModelTracing,
    prompt: Any | None = None,
) -> tuple[Response, Any]:
    """Open a streamed call exactly as `LitellmModel` does (the same request), without reading it.

    The arguments are `Model.stream_response`'s, plus the generation span (given the request when tracing includes
    data); ``model_settings.include_usage`` decides whether ``stream_options`` is sent.

    Returns:
        The initial Responses ``Response`` and LiteLLM's ``CustomStreamWrapper``.
    """
    return await model._fetch_response(
        system_instructions,
        input,
        model_settings,
        tools,
        output_schema,
        handoffs,
        span,
        tracing,
        stream=True,
        prompt=prompt,
    )


def stream_events(response: Response, stream: AsyncIterator[Any], model: str) -> AsyncIterator[TResponseStreamEvent]:
    """The SDK's chat-completions stream handler on a guarded LiteLLM stream, as `LitellmModel` runs it.

    Args:
        response: The initial Response from `fetch_stream`.
        stream: The guarded stream (or a `SideStream` reading it on another loop).
        model: The model name (the handler keeps provider-specific fields, e.g. Gemini's thought signatures).

    Returns:
        The Responses events, ``response.completed`` last.
    """
    chunks: Any = stream  # LiteLLM's chunks, not the openai SDK's AsyncStream the handler is annotated with
    return ChatCmplStreamHandler.handle_stream(response, chunks, model=model)


class GuardedStream:
    """LiteLLM's stream, ended where `stop_at` says, failing if Gemini never sent a ``finishReason``.

    The raw Gemini chunks say whether the reply finished, so the guard watches them as LiteLLM parses them. At the
    stop chunk (which LiteLLM sends only after the upstream stream ended) or at the end of the stream the guard knows,
    and fails a reply that was cut off instead of passing it on as complete.
    """

    __slots__ = (
        "__weakref__",
        "_finished",
        "_inner",
        "_make_call",
        "_stop_at",
        "_stopped",
        "_watched",
        "_watching",
    )

    def __init__(self, inner: Any, stop_at: StopAt = "end") -> None:
        """Wrap LiteLLM's stream.

        Args:
            inner: The ``CustomStreamWrapper`` that ``litellm.acompletion(stream=True)`` returned.
            stop_at: ``"finish_chunk"`` (the call was made without ``stream_options``: the finish chunk gets the
                provider's usage as ``usage`` and is the last one), ``"usage_chunk"`` (with ``include_usage``: the
                usage chunk is the last one), or ``"end"`` (LiteLLM's own end, with its rebuild and logging).
        """
        self._inner = inner
        self._stop_at = stop_at
        self._stopped = False
        self._finished = False
        self._watching = False
        self._watched: Any = None
        self._make_call: Any = None
        make_call = getattr(inner, "make_call", None)
        if getattr(inner, "completion_stream", None) is not None:
            self._watch(inner.completion_stream)
        elif callable(make_call):
            # LiteLLM opens the Gemini HTTP stream lazily, on the first chunk.
            opener = cast("Callable[..., Awaitable[Any]]", make_call)

            async def make_call_and_watch(*args: Any, **kwargs: Any) -> Any:
                iterator = await opener(*args, **kwargs)
                self._watch(iterator)
                return iterator

            self._make_call = make_call
            inner.make_call = make_call_and_watch

    def _watch(self, iterator: Any) -> None:
        parse = getattr(iterator, "chunk_parser", None)
        if not callable(parse) or not type(iterator).__module__.endswith("gemini"):
            return
        self._watching = True
        self._watched = iterator

        def parse_and_watch(chunk: Any) -> Any:
            if not self._finished and isinstance(chunk, dict):
                self._finished = any(c.get("finishReason") for c in chunk.get("candidates") or ())
            return parse(chunk=chunk)

        iterator.chunk_parser = parse_and_watch

    def _unwatch(self) -> None:
        """Take the wrappers off again once the stream is over.

        They close over this guard, which holds the stream: left in place they make a reference cycle that keeps
        the whole LiteLLM stream (its chunks, its HTTP response) alive until a full garbage collection.
        """
        if self._make_call is not None:
            self._inner.make_call, self._make_call = self._make_call, None
        if self._watched is not None:
            vars(self._watched).pop("chunk_parser", None)
            self._watched = None

    def _check_finished(self) -> None:
        if self._watching and not self._finished:
            raise TruncatedStreamError("the model stream ended without a finish reason")

    def _is_last(self, chunk: Any) -> bool:
        if self._stop_at == "finish_chunk":
            usage = finish_usage(chunk)
            if usage is None:
                return False
            if not isinstance(usage, UnreportedUsage):  # none reported: the SDK records a call without usage
                chunk.usage = usage
            return True
        return self._stop_at == "usage_chunk" and getattr(chunk, "usage", None) is not None

    def __aiter__(self) -> GuardedStream:
        return self

    async def __anext__(self) -> Any:
        if self._stopped:
            raise StopAsyncIteration
        try:
            chunk = await self._inner.__anext__()
        except StopAsyncIteration:
            self._unwatch()
            self._check_finished()
            raise
        except BaseException:
            self._unwatch()
            raise
        if self._stop_at != "end" and self._is_last(chunk):
            # The upstream stream has ended: stop before LiteLLM's end-of-stream rebuild, cost and logging.
            self._stopped = True
            self._unwatch()
            await self.aclose()
            self._check_finished()
        return chunk

    async def aclose(self) -> None:
        """Close the upstream stream (this is what aborts the provider's generation on cancel)."""
        self._stopped = True
        self._unwatch()
        await LitellmModel._maybe_aclose(self._inner)


class GuardedLitellmModel(LitellmModel):
    """The SDK's `LitellmModel` whose streams must end with a finish reason (the path before our own model)."""

    async def _fetch_response(self, *args: Any, **kwargs: Any) -> Any:
        fetched = await super()._fetch_response(*args, **kwargs)
        if isinstance(fetched, tuple):
            response, stream = fetched
            return response, GuardedStream(stream)
        return fetched

    async def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[TResponseStreamEvent]:
        """The model's stream, each tool call's arguments under the text policy (`storable_calls`)."""
        async for event in super().stream_response(*args, **kwargs):
            yield storable_calls(event)


def storable_calls(event: TResponseStreamEvent) -> TResponseStreamEvent:
    """The event with the arguments of the tool calls it carries made storable (in place).

    The SDK fingerprints and replays a call's arguments as UTF-8; a lone surrogate the model sent (escaped in its
    JSON) would end the turn with an error there, and again whenever the history is replayed.
    """
    if isinstance(event, ResponseOutputItemAddedEvent | ResponseOutputItemDoneEvent):
        items: list[object] = [event.item]
    elif isinstance(event, ResponseCompletedEvent):
        items = list(event.response.output)
    else:
        return event
    for item in items:
        if isinstance(item, ResponseFunctionToolCall):
            item.arguments = storable_json_text(item.arguments)
    return event
