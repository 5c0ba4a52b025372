"""The usage ledger's collector: one entry per model call of a turn, priced from LiteLLM's cost map.

`UsageHooks` is the Agents SDK's public `RunHooks` seam: `on_llm_end` receives each call's `ModelResponse` with that
call's own usage, and the agent that made it. The entries stay in memory and are written with the turn's outcome, in
the transaction that finishes it (no statement per call or per token). Each turn segment (a new turn, or a paused
one resuming) has its own hooks, so a resumed turn never counts a call twice.

A turn may also carry a `Budget`: what its user may still spend. A call that takes the turn past it ends the turn
after that call (`QuotaExceededError`); the reply streamed so far is stored.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache

import litellm
from agents import Agent, ModelResponse, RunContextWrapper, RunHooks, Tool, TResponseInputItem
from opentelemetry.trace import Span, SpanKind

from backend import tracing
from backend.chat.context import ChatContext
from backend.models import utcnow
from backend.usage.limits import Budget, Refusal

log = logging.getLogger(__name__)

LONG_CONTEXT_TOKENS = 200_000
"""Above this many input tokens some models (Gemini's Pro models among them) charge another rate per token."""


@lru_cache(maxsize=256)
def unit_prices(model: str, long_context: bool) -> tuple[float, float, float] | None:
    """USD per input, output and cached-input token of `model` by LiteLLM's cost map; None if it has no price.

    `litellm.cost_per_token` takes milliseconds per call, so it runs once per model and context tier here; the
    prices are linear within a tier.
    """
    n = LONG_CONTEXT_TOKENS + 1000 if long_context else 1000
    try:
        input_cost, _ = litellm.cost_per_token(model=model, prompt_tokens=n, completion_tokens=0)
        _, output_cost = litellm.cost_per_token(model=model, prompt_tokens=n, completion_tokens=n)
        cached_cost, _ = litellm.cost_per_token(
            model=model, prompt_tokens=n, completion_tokens=0, cache_read_input_tokens=n
        )
    except Exception:  # LiteLLM raises for a model its map does not know
        log.info("LiteLLM's cost map has no price for %s; its calls are recorded at cost 0", model)
        return None
    return float(input_cost) / n, float(output_cost) / n, float(cached_cost) / n


def price(model: str, input_tokens: int, output_tokens: int, cached_tokens: int) -> tuple[float, bool]:
    """The cost in USD of one call by LiteLLM's public cost map, and whether the map knows the model.

    Args:
        model: The LiteLLM model string (e.g. `gemini/gemini-2.5-flash`).
        input_tokens: Prompt tokens, cached ones included.
        output_tokens: Completion tokens, reasoning included.
        cached_tokens: Prompt tokens read from the provider's cache (priced lower where the map says so).

    Returns:
        `(cost, True)`, or `(0.0, False)` for a model the map does not price.
    """
    prices = unit_prices(model, input_tokens > LONG_CONTEXT_TOKENS)
    if prices is None:
        return 0.0, False
    per_input, per_output, per_cached = prices
    cached = min(cached_tokens, input_tokens)
    return (input_tokens - cached) * per_input + cached * per_cached + output_tokens * per_output, True


def model_name(agent: Agent[ChatContext]) -> str:
    """The model string an agent runs (a LiteLLM model keeps it in `.model`)."""
    model = agent.model
    if isinstance(model, str):
        return model
    name = getattr(model, "model", None)
    return name if isinstance(name, str) else type(model).__name__


@dataclass(frozen=True, slots=True)
class ModelCall:
    """One model call, as the ledger stores it (without the ids of its user, conversation and message)."""

    agent: str | None
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0
    priced: bool = True
    outcome: str = "ok"
    at: datetime = field(default_factory=utcnow)
    seconds: float = 0.0


def priced_call(
    agent: str | None,
    model: str,
    *,
    input_tokens: int,
    output_tokens: int,
    total_tokens: int,
    cached_tokens: int,
    reasoning_tokens: int,
    seconds: float,
) -> ModelCall:
    """A call that returned, with the usage the provider reported, priced by LiteLLM's cost map (`price`)."""
    cost, priced = price(model, input_tokens, output_tokens, cached_tokens)
    return ModelCall(
        agent=agent,
        model=model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=total_tokens,
        cached_tokens=cached_tokens,
        reasoning_tokens=reasoning_tokens,
        cost_usd=cost,
        priced=priced,
        seconds=seconds,
    )


def ledger_rows(
    user_id: str, conversation_id: uuid.UUID, message_id: uuid.UUID | None, calls: list[ModelCall]
) -> list[dict[str, object]]:
    """The `usage_records` rows of calls, for one Core INSERT (`message_id` None: a call outside any reply)."""
    return [
        {
            "id": uuid.uuid4(),
            "user_id": user_id,
            "conversation_id": conversation_id,
            "message_id": message_id,
            "agent": call.agent,
            "model": call.model,
            "input_tokens": call.input_tokens,
            "output_tokens": call.output_tokens,
            "total_tokens": call.total_tokens,
            "cached_tokens": call.cached_tokens,
            "reasoning_tokens": call.reasoning_tokens,
            "cost_usd": call.cost_usd,
            "priced": call.priced,
            "outcome": call.outcome,
            "created_at": call.at,
        }
        for call in calls
    ]


class QuotaExceededError(Exception):
    """A model call took the turn past its user's quota; the turn ends after that call."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


class UsageHooks(RunHooks[ChatContext]):
    """Collect a turn segment's model calls, stop the run once it spends past its budget, and trace the run.

    Spans (see `backend.tracing`): one per model call, tool call and handoff, children of the turn's span.
    """

    def __init__(self, budget: Budget | None = None) -> None:
        """Start with no calls; `budget` is what the user may still spend (None: unlimited)."""
        self.calls: list[ModelCall] = []
        self.budget = budget
        self._open: tuple[str, str, float] | None = None  # the running call: agent, model, start time
        self._call_span: Span | None = None
        self._tool_spans: dict[str, Span] = {}

    @property
    def tokens(self) -> int:
        """Tokens of the segment's calls so far."""
        return sum(call.total_tokens for call in self.calls)

    @property
    def cost(self) -> float:
        """Cost in USD of the segment's calls so far."""
        return sum(call.cost_usd for call in self.calls)

    async def on_llm_start(
        self,
        context: RunContextWrapper[ChatContext],
        agent: Agent[ChatContext],
        system_prompt: str | None,
        input_items: list[TResponseInputItem],
    ) -> None:
        """A call begins (kept open until it returns, to record it even if the turn ends during it)."""
        model = model_name(agent)
        self._open = (agent.name, model, time.perf_counter())
        self._call_span = tracing.tracer.start_span(
            f"chat {model}",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": model.split("/", 1)[0] if "/" in model else "unknown",
                "gen_ai.request.model": model,
                "gen_ai.agent.name": agent.name,
            },
        )

    async def on_llm_end(
        self, context: RunContextWrapper[ChatContext], agent: Agent[ChatContext], response: ModelResponse
    ) -> None:
        """A call returned: record its usage and cost, then end the turn if it spent past the budget.

        Raises:
            QuotaExceededError: The turn's tokens or cost reached what the user had left.
        """
        started = self._open[2] if self._open is not None else time.perf_counter()
        self._open = None
        usage = response.usage
        model = model_name(agent)
        self.calls.append(
            priced_call(
                agent.name,
                model,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                total_tokens=usage.total_tokens,
                cached_tokens=usage.input_tokens_details.cached_tokens or 0,
                reasoning_tokens=usage.output_tokens_details.reasoning_tokens or 0,
                seconds=time.perf_counter() - started,
            )
        )
        calls_tools = any(getattr(item, "type", None) == "function_call" for item in response.output)
        span, self._call_span = self._call_span, None
        if span is not None:
            span.set_attributes(
                {
                    "gen_ai.response.model": model,
                    "gen_ai.usage.input_tokens": usage.input_tokens,
                    "gen_ai.usage.output_tokens": usage.output_tokens,
                    "gen_ai.response.finish_reasons": ["tool_calls" if calls_tools else "stop"],
                }
            )
            if response.response_id:
                span.set_attribute("gen_ai.response.id", response.response_id)
            span.end()
        budget = self.budget
        if budget is None or not calls_tools:
            return  # no quota, or the run ends with this call anyway (it calls no tool and hands off to no one)
        if budget.tokens is not None and self.tokens >= budget.tokens:
            raise QuotaExceededError(budget.refusal)
        if budget.usd is not None and self.cost >= budget.usd:
            raise QuotaExceededError(budget.usd_refusal)

    async def on_tool_start(
        self, context: RunContextWrapper[ChatContext], agent: Agent[ChatContext], tool: Tool
    ) -> None:
        """A tool (a function tool or an MCP server's) starts: open its span."""
        call_id = getattr(context, "tool_call_id", None) or tool.name
        self._tool_spans[call_id] = tracing.tracer.start_span(
            f"execute_tool {tool.name}",
            kind=SpanKind.INTERNAL,
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": tool.name,
                "gen_ai.tool.call.id": call_id,
                "gen_ai.agent.name": agent.name,
            },
        )

    async def on_tool_end(
        self, context: RunContextWrapper[ChatContext], agent: Agent[ChatContext], tool: Tool, result: object
    ) -> None:
        """A tool returned: close its span (failed when it returned an error)."""
        span = self._tool_spans.pop(getattr(context, "tool_call_id", None) or tool.name, None)
        if span is not None:
            failed = (isinstance(result, dict) and "error" in result) or (
                isinstance(result, str) and result.lstrip().startswith('{"error"')
            )
            tracing.end_span(span, "tool_error" if failed else None)

    async def on_handoff(
        self, context: RunContextWrapper[ChatContext], from_agent: Agent[ChatContext], to_agent: Agent[ChatContext]
    ) -> None:
        """The conversation passes to another agent: a span marks it."""
        tracing.tracer.start_span(
            f"handoff {from_agent.name} -> {to_agent.name}",
            attributes={
                "gen_ai.operation.name": "handoff",
                "gen_ai.agent.name": from_agent.name,
                "gen_ai.handoff.target_agent": to_agent.name,
            },
        ).end()

    def close(self, outcome: str) -> None:
        """The segment ended: a call still open (the turn failed or was stopped during it) is recorded as `outcome`."""
        for span in self._tool_spans.values():
            tracing.end_span(span, outcome)
        self._tool_spans.clear()
        if self._call_span is not None:
            tracing.end_span(self._call_span, outcome)
            self._call_span = None
        if self._open is None:
            return
        agent, model, started = self._open
        self._open = None
        self.calls.append(
            ModelCall(agent=agent, model=model, priced=False, outcome=outcome, seconds=time.perf_counter() - started)
        )
