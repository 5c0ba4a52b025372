"""Our Agents SDK model on LiteLLM: each streamed call ends at the provider's finish.

`FinishChunkLitellmModel` is the SDK's `LitellmModel` (the same request: the SDK's message and tool conversion,
Gemini's tool-message ordering and thought signatures, reasoning, `extra_args`, headers, retry knobs, all through
`litellm.acompletion`) with its own streaming: the SDK's chat-completions stream handler reads LiteLLM's stream up to
the provider's finish, where the stream is closed. With ``include_usage`` LiteLLM would rebuild the whole streamed
response twice per call (once for the usage chunk, once for its success logging), compute the cost and dispatch its
logging; all of that is skipped:

* ``finish_chunk`` (the default): the call is made without ``stream_options``; LiteLLM sends its finish chunk after
  the upstream stream ended, carrying the provider's usage, and the stream is closed there.
* ``usage_chunk`` (documented behaviour only): ``include_usage`` stays on and the stream is closed right after the
  usage chunk, which skips LiteLLM's second rebuild and its logging dispatch.

A call whose input carries attachments runs on a side loop (`backend.chat.side_loop`): LiteLLM builds its request
there, so megabytes of files do not hold the server's loop. Non-streaming calls stay on `LitellmModel.get_response`.
The private names this relies on live in `litellm_guard.py`. So do not expect LiteLLM's success callbacks, cost
tracking or caching for streamed calls: take usage from the run
(`RunResult.context_wrapper.usage.request_usage_entries`, one entry per model call); the usage ledger prices each
(`backend.usage.ledger.price`).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any, Literal

from agents import Handoff, ModelSettings, Tool, TResponseInputItem, generation_span
from agents.agent_output import AgentOutputSchemaBase
from agents.extensions.models.litellm_model import LitellmModel
from agents.items import TResponseStreamEvent
from agents.models.interface import ModelTracing

from backend.chat.history import carries_files
from backend.chat.litellm_guard import GuardedStream, fetch_stream, storable_calls, stream_events
from backend.chat.side_loop import SideStream, side_loop

__all__ = ["USAGE_SOURCES", "FinishChunkLitellmModel", "UsageSource"]

UsageSource = Literal["finish_chunk", "usage_chunk"]
USAGE_SOURCES: tuple[UsageSource, ...] = ("finish_chunk", "usage_chunk")


class FinishChunkLitellmModel(LitellmModel):
    """`LitellmModel` whose streamed calls end at the provider's finish (see the module docstring)."""

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        usage_source: UsageSource = "finish_chunk",
    ) -> None:
        """Create the model.

        Args:
            model: LiteLLM's model string, e.g. ``gemini/gemini-2.5-flash``.
            base_url: The provider's base URL (LiteLLM's default when None).
            api_key: The provider's key.
            usage_source: Where each call's usage comes from: ``finish_chunk`` or ``usage_chunk``.
        """
        super().__init__(model, base_url=base_url, api_key=api_key)
        self.usage_source: UsageSource = usage_source
        self._include_usage = True if usage_source == "usage_chunk" else None
        self._closing: set[asyncio.Future[None]] = set()

    def call_settings(self, model_settings: ModelSettings) -> ModelSettings:
        """The settings a streamed call is made with: ``include_usage`` as the usage source needs it.

        Args:
            model_settings: The agent's resolved settings.

        Returns:
            The same object when it already fits (what `build_model` makes), else a copy.
        """
        if model_settings.include_usage is self._include_usage:
            return model_settings
        return dataclasses.replace(model_settings, include_usage=self._include_usage)

    async def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff[Any, Any]],
        tracing: ModelTracing,
        previous_response_id: str | None = None,
        conversation_id: str | None = None,
        prompt: Any | None = None,
    ) -> AsyncIterator[TResponseStreamEvent]:
        """Stream one model call as Responses events, ending at the provider's finish.

        Args:
            system_instructions: The agent's instructions.
            input: The model input.
            model_settings: The agent's resolved settings.
            tools: The tools offered.
            output_schema: The structured output schema, if any.
            handoffs: The handoffs offered.
            tracing: Whether and how to trace.
            previous_response_id: Unused (chat completions).
            conversation_id: Unused (chat completions).
            prompt: Unused by LiteLLM's chat completions.

        Yields:
            The SDK's Responses events, ``response.completed`` last (with the provider's usage).

        Raises:
            TruncatedStreamError: The provider's stream ended without a finish reason.
        """
        with generation_span(model=str(self.model), disabled=tracing.is_disabled()) as span:
            fetching = fetch_stream(
                self,
                system_instructions,
                input,
                self.call_settings(model_settings),
                tools,
                output_schema,
                handoffs,
                span,
                tracing,
                prompt=prompt,
            )
            stream: GuardedStream | SideStream
            if isinstance(input, list) and carries_files(input):  # built, sent and read off the server's loop
                side = side_loop()
                response, raw = await side.run(fetching)
                stream = SideStream(GuardedStream(raw, self.usage_source), side)
            else:
                response, raw = await fetching
                stream = GuardedStream(raw, self.usage_source)
            cancelled = False
            try:
                async for event in stream_events(response, stream, self.model):
                    if event.type == "response.completed" and event.response.usage is not None:
                        usage = event.response.usage
                        span.span_data.usage = {
                            "input_tokens": usage.input_tokens,
                            "output_tokens": usage.output_tokens,
                        }
                    yield storable_calls(event)
            except asyncio.CancelledError:
                cancelled = True
                self._close_in_background(stream)
                raise
            finally:
                if not cancelled:
                    await self._close(stream)

    async def _close(self, stream: GuardedStream | SideStream) -> None:
        """Close the stream; a cancellation arriving meanwhile leaves the close to finish in the background."""
        closing = asyncio.ensure_future(stream.aclose())
        try:
            await asyncio.shield(closing)
        except asyncio.CancelledError:
            self._keep_until_done(closing)
            raise

    def _close_in_background(self, stream: GuardedStream | SideStream) -> None:
        self._keep_until_done(asyncio.ensure_future(stream.aclose()))

    def _keep_until_done(self, closing: asyncio.Future[None]) -> None:
        self._closing.add(closing)
        closing.add_done_callback(self._closed)

    def _closed(self, closing: asyncio.Future[None]) -> None:
        self._closing.discard(closing)
        if not closing.cancelled():
            closing.exception()  # retrieved: a failed close after cancellation is not worth a warning
