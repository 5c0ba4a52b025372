"""The truncated-stream guard: the one place that relies on private LiteLLM and Agents SDK internals.

A Gemini reply cut off upstream must not be stored and shown as complete. LiteLLM 1.109 drops an unparsable last SSE
line, ends the stream normally and marks every Gemini chunk ``finish_reason="stop"``; its own clean-EOF check
(``CustomStreamWrapper._should_fail_on_clean_eof``) covers OpenAI-compatible streams only, and neither LiteLLM nor
the Agents SDK has a public hook that sees the provider's raw chunks. So this module watches them, through:

* ``LitellmModel._fetch_response`` (Agents SDK): returns ``(response, stream)`` when streaming;
* ``LitellmModel._maybe_aclose`` (Agents SDK): closes the LiteLLM stream;
* ``CustomStreamWrapper.completion_stream`` / ``.make_call`` (LiteLLM): the provider iterator, or the coroutine
  that opens it on the first chunk;
* the Gemini ``ModelResponseIterator.chunk_parser(chunk=...)`` (LiteLLM), which its ``__anext__`` calls through the
  instance, so an instance attribute can wrap it.

``tests/test_litellm_guard.py`` fails loudly when an upgrade changes any of these (and when the guard stops
attaching to a real Gemini stream), so the guard can never silently turn itself off.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

from agents.extensions.models.litellm_model import LitellmModel


class TruncatedStreamError(Exception):
    """The provider's stream ended before the provider said the reply was finished."""


class _FinishGuard:
    """Pass LiteLLM chunks through, and fail if Gemini never sent a `finishReason`.

    LiteLLM drops an unparsable last SSE line, ends the stream normally and marks every Gemini chunk
    `finish_reason="stop"`, so a reply cut off upstream would otherwise be stored and shown as complete. The raw
    Gemini chunks still say whether the reply finished, so the guard watches them as LiteLLM parses them.
    """

    __slots__ = ("__weakref__", "_finished", "_inner", "_make_call", "_watched", "_watching")

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._finished = False
        self._watching = False
        self._watched: Any = None
        self._make_call: Any = None
        make_call: Any = getattr(inner, "make_call", None)
        if getattr(inner, "completion_stream", None) is not None:
            self._watch(inner.completion_stream)
        elif callable(make_call):
            # LiteLLM opens the Gemini HTTP stream lazily, on the first chunk.
            opener = cast("Callable[..., Awaitable[Any]]", make_call)  # LiteLLM's coroutine function

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

    def __aiter__(self) -> _FinishGuard:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self._inner.__anext__()
        except StopAsyncIteration:
            self._unwatch()
            if self._watching and not self._finished:
                raise TruncatedStreamError("the model stream ended without a finish reason") from None
            raise
        except BaseException:
            self._unwatch()
            raise

    async def aclose(self) -> None:
        """Close the upstream stream (this is what aborts the provider's generation on cancel)."""
        self._unwatch()
        await LitellmModel._maybe_aclose(self._inner)


class GuardedLitellmModel(LitellmModel):
    """`LitellmModel` whose streams must end with a finish reason (see `_FinishGuard`)."""

    async def _fetch_response(self, *args: Any, **kwargs: Any) -> Any:
        fetched = await super()._fetch_response(*args, **kwargs)
        if isinstance(fetched, tuple):
            response, stream = fetched
            return response, _FinishGuard(stream)
        return fetched
