"""A turn's Prometheus measurements (the series live in `backend.metrics`)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from backend import metrics
from backend.chat.events import Event, FinishReason, Text, Thinking, ToolResult
from backend.usage.ledger import ModelCall

MODEL_ERROR_CODES = frozenset(
    {"rate_limited", "provider_unavailable", "provider_error", "turn_timeout", "max_turns", "quota_exceeded"}
)
"""Error codes that count as model errors (`chat_model_errors_total`)."""


class TurnMetrics:
    """One turn segment's measurements: started on creation, observed per event, recorded once at its end."""

    __slots__ = ("_first_token", "_started")

    def __init__(self) -> None:
        """The segment starts now."""
        self._started = time.perf_counter()
        self._first_token = False
        metrics.TURNS_STARTED.inc()
        metrics.RUNNING_TURNS.inc()

    def observe(self, event: Event) -> None:
        """Time the first text or reasoning delta; count tool results and tool errors."""
        if not self._first_token and isinstance(event, Text | Thinking):
            self._first_token = True
            metrics.TIME_TO_FIRST_TOKEN.observe(time.perf_counter() - self._started)
        elif isinstance(event, ToolResult):
            metrics.TOOL_CALLS.labels(event.name).inc()
            if isinstance(event.result, dict) and "error" in event.result:
                metrics.TOOL_ERRORS.labels(event.name).inc()

    def finish(self, finish: FinishReason, error_code: str | None, calls: Sequence[ModelCall]) -> None:
        """Record how the segment ended and what its model calls used."""
        metrics.RUNNING_TURNS.dec()
        metrics.TURN_DURATION.observe(time.perf_counter() - self._started)
        metrics.TURNS_FINISHED.labels(finish).inc()
        if finish in ("approval_required", "client_tool"):
            metrics.WAITS.labels(finish).inc()
        if error_code is not None and error_code in MODEL_ERROR_CODES:
            metrics.MODEL_ERRORS.labels(error_code).inc()
        for call in calls:
            metrics.MODEL_CALLS.labels(call.model, call.outcome).inc()
            for kind, tokens in (
                ("input", call.input_tokens),
                ("output", call.output_tokens),
                ("cached", call.cached_tokens),
                ("reasoning", call.reasoning_tokens),
            ):
                if tokens:
                    metrics.MODEL_TOKENS.labels(call.model, kind).inc(tokens)
            if call.cost_usd:
                metrics.MODEL_COST.labels(call.model).inc(call.cost_usd)
