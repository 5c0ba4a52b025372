"""The one factory that builds the model from settings: LiteLLM on the configured provider, or the offline demo.

The offline demo model is a real Agents SDK `Model`: deterministic, labelled as the demo in every reply, able to
drive the task tools for a few phrasings, and streaming its words one by one. It makes the first run work with no
configuration at all.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import litellm
from agents import Model, ModelResponse, ModelSettings, Tool, Usage, retry_policies
from agents.retry import ModelRetrySettings
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseContentPartAddedEvent,
    ResponseContentPartDoneEvent,
    ResponseCreatedEvent,
    ResponseFunctionToolCall,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseTextDeltaEvent,
    ResponseUsage,
)
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

from backend.chat.litellm_guard import GuardedLitellmModel, TruncatedStreamError
from backend.files.content import attached_descriptions
from backend.settings import Settings

__all__ = ["OFFLINE_LABEL", "GuardedLitellmModel", "OfflineModel", "TruncatedStreamError", "build_model"]

litellm.suppress_debug_info = True  # LiteLLM otherwise print()s "Give Feedback / Get Help" on every error
# LiteLLM logs every request at INFO, including model details; keep our INFO log about our own events.
logging.getLogger("LiteLLM").setLevel(logging.WARNING)

RETRY_STATUSES = (408, 429, 500, 502, 503, 504)
OFFLINE_LABEL = "(offline demo)"
OFFLINE_MODEL_NAME = "offline-demo"


def build_model(settings: Settings) -> tuple[Model, ModelSettings]:
    """Build the model and its settings.

    Args:
        settings: Application settings: model string, key, base URL, timeouts, retries.

    Returns:
        The model, and settings that request usage and retry 429/5xx before the first token.
    """
    model_settings = ModelSettings(
        include_usage=True,
        # LiteLLM's own HTTP timeout rather than `ModelSettings.timeout`: the SDK enforces that one by moving every
        # model stream into an extra task and handing each event across two queues, a measurable per-chunk cost.
        extra_args={"timeout": settings.model_timeout_seconds},
        retry=ModelRetrySettings(
            max_retries=settings.model_retries,
            backoff={"initial_delay": 0.5, "max_delay": 4.0, "multiplier": 2.0, "jitter": True},
            policy=retry_policies.any(retry_policies.http_status(RETRY_STATUSES), retry_policies.network_error()),
        ),
    )
    if settings.use_offline_model:
        return OfflineModel(), model_settings
    model = GuardedLitellmModel(settings.model, base_url=settings.gemini_api_base, api_key=settings.gemini_api_key)
    return model, model_settings


# --- the offline demo model ----------------------------------------------------------------------------------------

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^(?:list|show)(?: me)?(?: all)?(?: my)? (?:tasks|todos|to-dos)\b", re.I), "list_tasks"),
    (re.compile(r"^what(?:'s| is| are) (?:on )?my (?:tasks|list|todos)\b", re.I), "list_tasks"),
    (re.compile(r"^rename (?:the )?(?:task )?(?P<task>.+?) to (?P<title>.+)$", re.I), "update_task"),
    (re.compile(r"^(?:complete|finish|check off|mark done) (?:the )?(?:task )?(?P<task>.+)$", re.I), "complete_task"),
    (re.compile(r"^(?:delete|remove) (?:the )?(?:task )?(?P<task>.+)$", re.I), "delete_task"),
    (re.compile(r"^(?:add|create|new)(?: a)?(?: task)?(?: to)?:? (?P<title>.+)$", re.I), "add_task"),
    (re.compile(r"^remind me to (?P<title>.+)$", re.I), "add_task"),
]

_HELP = (
    f"{OFFLINE_LABEL} I'm the built-in offline demo model, so I only understand a few task requests, such as "
    '"add buy milk", "list my tasks", "complete buy milk", "rename buy milk to buy oat milk" or "delete buy milk". '
    "To chat with a real model, set GEMINI_API_KEY (and optionally MODEL) and restart the server."
)
MCP_TOOL_PREFIX = "mcp_"


def help_text(mcp_tools: Sequence[str] = ()) -> str:
    """The offline model's help, naming the external MCP tools a real model could use right now.

    Args:
        mcp_tools: Names of the MCP tools offered in this run (connected servers only).

    Returns:
        The help reply.
    """
    if not mcp_tools:
        return f"{_HELP} No MCP tool servers are connected (see MCP_SERVERS)."
    return f"{_HELP} Tools from MCP servers a real model can call: {', '.join(mcp_tools)}."


def _text_of(item: Any) -> str:
    content = item.get("content") if isinstance(item, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _plan(items: list[Any], mcp_tools: Sequence[str] = ()) -> tuple[str, dict[str, Any]] | str:
    """Decide the next step from the conversation: a tool call `(name, args)` or the reply text."""
    last = items[-1] if items else {}
    if isinstance(last, dict) and last.get("type") == "function_call_output":
        name = next(
            (
                i.get("name")
                for i in reversed(items)
                if isinstance(i, dict) and i.get("type") == "function_call" and i.get("call_id") == last["call_id"]
            ),
            "",
        )
        return _describe_result(str(name), str(last.get("output", "")))
    last_user = next((i for i in reversed(items) if isinstance(i, dict) and i.get("role") == "user"), {})
    received = _attachments_ack(last_user)
    if received:
        return received
    user_text = _text_of(last_user).strip()
    sentence = user_text.rstrip(".!?").strip()
    for pattern, tool in _PATTERNS:
        match = pattern.match(sentence)
        if match:
            return tool, {k: v.strip().strip("\"'") for k, v in match.groupdict().items()}
    return help_text(mcp_tools)


def _attachments_ack(user_item: dict[str, Any]) -> str:
    """The reply to a message with attachments: what arrived (name, type, size); empty when none did."""
    files = attached_descriptions(user_item.get("content"))
    if not files:
        return ""
    noun = "file" if len(files) == 1 else "files"
    return (
        f"{OFFLINE_LABEL} I received {len(files)} {noun}: {', '.join(files)}. "
        "The offline demo cannot read them; set GEMINI_API_KEY to use a real model."
    )


def _describe_result(tool: str, output: str) -> str:
    try:
        result = json.loads(output)
    except ValueError:
        result = {"error": output}
    if not isinstance(result, dict):
        result = {"error": str(result)}
    if "error" in result:
        return f"{OFFLINE_LABEL} That didn't work: {result['error']}"
    if tool == "list_tasks":
        tasks = result.get("tasks", [])
        if not tasks:
            return f"{OFFLINE_LABEL} You have no tasks."
        lines = [f"- [{'x' if t.get('completed') else ' '}] {t.get('title')}" for t in tasks]
        return f"{OFFLINE_LABEL} Your tasks:\n" + "\n".join(lines)
    title = (result.get("task") or result.get("deleted") or {}).get("title", "")
    verbs = {
        "add_task": "Added",
        "complete_task": "Completed",
        "update_task": "Updated",
        "delete_task": "Deleted",
    }
    return f"{OFFLINE_LABEL} {verbs.get(tool, 'Done:')} “{title}”."


def _words(text: str) -> list[str]:
    return re.findall(r"\S+\s*|\s+", text)


def _usage(input_items: list[Any], output_words: int) -> ResponseUsage:
    input_tokens = sum(len(_text_of(i).split()) or 1 for i in input_items)
    return ResponseUsage(
        input_tokens=input_tokens,
        output_tokens=output_words,
        total_tokens=input_tokens + output_words,
        input_tokens_details=InputTokensDetails(cached_tokens=0, cache_write_tokens=0),
        output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
    )


class OfflineModel(Model):
    """A deterministic stand-in for a real model, used when no API key is configured."""

    def __init__(self, word_delay: float = 0.02) -> None:
        """Create the model.

        Args:
            word_delay: Seconds between streamed words, so the UI visibly streams.
        """
        self.word_delay = word_delay

    def _output(
        self, input: str | list[Any], tools: Sequence[Tool] = ()
    ) -> list[ResponseOutputMessage | ResponseFunctionToolCall]:
        items = [{"role": "user", "content": input}] if isinstance(input, str) else input
        step = _plan(items, [tool.name for tool in tools if tool.name.startswith(MCP_TOOL_PREFIX)])
        if isinstance(step, tuple):
            name, args = step
            return [
                ResponseFunctionToolCall(
                    type="function_call",
                    call_id=f"call_{uuid.uuid4().hex[:24]}",
                    name=name,
                    arguments=json.dumps(args),
                    status="completed",
                )
            ]
        return [
            ResponseOutputMessage(
                id=f"msg_{uuid.uuid4().hex[:24]}",
                type="message",
                role="assistant",
                status="completed",
                content=[ResponseOutputText(type="output_text", text=step, annotations=[])],
            )
        ]

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[Any],
        model_settings: ModelSettings | None = None,
        tools: Sequence[Tool] = (),
        *args: Any,
        **kwargs: Any,
    ):
        """Answer in one piece (non-streaming runs)."""
        output = self._output(input, tools)
        text = output[0].content[0].text if isinstance(output[0], ResponseOutputMessage) else ""
        usage = _usage(input if isinstance(input, list) else [], len(_words(text)))
        return ModelResponse(
            output=list(output),
            usage=Usage(
                requests=1,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                total_tokens=usage.total_tokens,
            ),
            response_id=None,
        )

    async def stream_response(  # type: ignore[override]
        self,
        system_instructions: str | None,
        input: str | list[Any],
        model_settings: ModelSettings | None = None,
        tools: Sequence[Tool] = (),
        *args: Any,
        **kwargs: Any,
    ) -> AsyncIterator[Any]:
        """Stream the answer word by word, as Responses API events."""
        output = self._output(input, tools)
        seq = iter(range(1_000_000))
        response = Response(
            id=f"resp_{uuid.uuid4().hex[:24]}",
            created_at=time.time(),
            model=OFFLINE_MODEL_NAME,
            object="response",
            output=[],
            tool_choice="auto",
            tools=[],
            parallel_tool_calls=False,
        )
        yield ResponseCreatedEvent(type="response.created", response=response, sequence_number=next(seq))
        item = output[0]
        words: list[str] = []
        if isinstance(item, ResponseOutputMessage):
            text = _output_text(item)
            words = _words(text)
            empty = item.model_copy(update={"content": [], "status": "in_progress"})
            yield ResponseOutputItemAddedEvent(
                type="response.output_item.added", item=empty, output_index=0, sequence_number=next(seq)
            )
            part = ResponseOutputText(type="output_text", text="", annotations=[])
            yield ResponseContentPartAddedEvent(
                type="response.content_part.added",
                item_id=item.id,
                output_index=0,
                content_index=0,
                part=part,
                sequence_number=next(seq),
            )
            for word in words:
                await asyncio.sleep(self.word_delay)
                yield ResponseTextDeltaEvent(
                    type="response.output_text.delta",
                    item_id=item.id,
                    output_index=0,
                    content_index=0,
                    delta=word,
                    logprobs=[],
                    sequence_number=next(seq),
                )
            yield ResponseContentPartDoneEvent(
                type="response.content_part.done",
                item_id=item.id,
                output_index=0,
                content_index=0,
                part=item.content[0],
                sequence_number=next(seq),
            )
        else:
            yield ResponseOutputItemAddedEvent(
                type="response.output_item.added", item=item, output_index=0, sequence_number=next(seq)
            )
        yield ResponseOutputItemDoneEvent(
            type="response.output_item.done", item=item, output_index=0, sequence_number=next(seq)
        )
        final = response.model_copy(
            update={
                "output": output,
                "status": "completed",
                "usage": _usage(input if isinstance(input, list) else [], len(words)),
            }
        )
        yield ResponseCompletedEvent(type="response.completed", response=final, sequence_number=next(seq))


def _output_text(item: object) -> str:
    """The text of an output message's first part; empty for tool calls and refusals."""
    if isinstance(item, ResponseOutputMessage) and item.content and isinstance(item.content[0], ResponseOutputText):
        return item.content[0].text
    return ""
