"""Agents SDK stream events and run failures, translated into our SSE events.

The stream's events are translated here; a run's pause is not a stream event (the SDK reports it as the result's
interruptions), and `backend.chat.pause` turns it into `approval_request` and `client_tool_call` events. This module
also owns the one shape of a tool's result (`tool_output`): every `tool_result.result` is a JSON object.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import openai
from agents import (
    AgentsException,
    AgentUpdatedStreamEvent,
    MaxTurnsExceeded,
    ModelBehaviorError,
    RawResponsesStreamEvent,
    StreamEvent,
    ToolCallItem,
    ToolCallOutputItem,
)
from agents.exceptions import ModelTimeoutError
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseReasoningSummaryTextDeltaEvent,
    ResponseTextDeltaEvent,
)

from backend.chat.events import Agent, Error, Event, Text, Thinking, ToolCall, ToolOutput, ToolResult
from backend.chat.model import TruncatedStreamError

log = logging.getLogger(__name__)

_TEXT_PARTS = frozenset({"input_text", "output_text", "text"})
REJECTED = "The user rejected this action."


def parse_json(text: Any) -> Any:
    """Parse a JSON string; anything else (or invalid JSON) is returned unchanged."""
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def tool_output(output: object) -> ToolOutput:
    """The one shape of a tool's result: always a JSON object (documented on `backend.chat.events.ToolOutput`).

    Args:
        output: What the SDK's tool output item holds: our tools' JSON text, an external MCP tool's content parts
            (`[{"type": "input_text", "text": ...}, ...]`), a plain string, or a client tool's JSON.

    Returns:
        A JSON object as it is; `{"text": ...}` for text (content parts joined, other parts left out);
        `{"value": ...}` for any other JSON value.
    """
    value = parse_json(output)
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        return {"text": value}
    if isinstance(value, list) and value and all(isinstance(p, dict) and "type" in p for p in value):
        return {"text": "\n".join(str(p.get("text", "")) for p in value if p["type"] in _TEXT_PARTS)}
    return {"value": value}


def rejection_output(reason: str | None) -> str:
    """The output a rejected approval gives the model (and, through `tool_output`, the client)."""
    return json.dumps({"error": reason or REJECTED, "rejected": True}, ensure_ascii=False)


class StreamTranslator:
    """Stateful per run: remembers tool names by call id so each `tool_result` can name its tool."""

    __slots__ = ("_hidden", "_tool_names")

    def __init__(self, hide_calls: frozenset[str] = frozenset(), known_calls: dict[str, str] | None = None) -> None:
        """Create a translator.

        Args:
            hide_calls: Tools whose calls are not sent as `tool_call` (client tools announce themselves at the pause).
            known_calls: Tool names by call id from earlier segments of the turn (a resumed run's results name them).
        """
        self._tool_names: dict[str, str] = dict(known_calls or {})
        self._hidden = hide_calls

    def translate(self, sdk_event: StreamEvent) -> Event | None:
        """Map one `Runner.run_streamed(...).stream_events()` item to our event, or None to skip it.

        Args:
            sdk_event: A `RawResponsesStreamEvent`, `RunItemStreamEvent` or `AgentUpdatedStreamEvent`.

        Returns:
            A `Text`, `Thinking`, `Agent`, `ToolCall` or `ToolResult` event, or None.
        """
        if isinstance(sdk_event, RawResponsesStreamEvent):
            data = sdk_event.data
            if isinstance(data, ResponseTextDeltaEvent):
                return Text(data.delta) if data.delta else None
            if isinstance(data, ResponseReasoningSummaryTextDeltaEvent):
                return Thinking(data.delta) if data.delta else None
            return None
        if isinstance(sdk_event, AgentUpdatedStreamEvent):
            return Agent(sdk_event.new_agent.name)
        item = sdk_event.item
        if isinstance(item, ToolCallItem):
            raw = item.raw_item
            if not isinstance(raw, ResponseFunctionToolCall):
                return None
            self._tool_names[raw.call_id] = raw.name
            if raw.name in self._hidden:
                return None
            args = parse_json(raw.arguments or "{}")
            return ToolCall(id=raw.call_id, name=raw.name, args=args if isinstance(args, dict) else {"value": args})
        if isinstance(item, ToolCallOutputItem):
            result = item.raw_item
            call_id = str(result.get("call_id", "") if isinstance(result, dict) else getattr(result, "call_id", ""))
            output = result.get("output") if isinstance(result, dict) else getattr(result, "output", None)
            return ToolResult(id=call_id, name=self._tool_names.get(call_id, ""), result=tool_output(output))
        return None


def _status_of(error: BaseException) -> int | None:
    status = getattr(error, "status_code", None)
    if isinstance(status, int):
        return status
    original = getattr(error, "original_exception", None)
    return _status_of(original) if original is not None and original is not error else None


def classify_error(error: BaseException) -> Error:
    """Turn a run failure into an `error` event with a stable code. Provider text never reaches the client.

    Args:
        error: What `stream_events()` raised.

    Returns:
        The event to send; the detail is logged here (class and status only, not the provider's text).
    """
    if isinstance(error, MaxTurnsExceeded):
        return Error("max_turns", "The assistant needed too many steps and stopped.", retryable=False)
    status = _status_of(error)
    log.warning("run failed: %s (status %s)", type(error).__name__, status)
    if status == 429:
        return Error("rate_limited", "The model provider is rate limiting requests. Try again shortly.", True)
    if isinstance(
        error, TruncatedStreamError | ModelTimeoutError | openai.APITimeoutError | openai.APIConnectionError
    ) or (status is not None and (status >= 500 or status == 408)):
        return Error("provider_unavailable", "The model provider is unavailable. Try again shortly.", True)
    if isinstance(error, openai.APIStatusError | ModelBehaviorError | AgentsException) or status is not None:
        return Error("provider_error", "The model provider rejected the request.", False)
    log.error("unexpected error during a run", exc_info=error)
    return Error("internal", "An internal error occurred.", retryable=True)
