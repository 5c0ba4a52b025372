"""The offline demo model: a real Agents SDK `Model` that plays every agent of the example team without a provider.

It is deterministic, labelled as the demo in every reply, drives the task tools for a few phrasings, routes between
the team's agents with their handoffs, and streams its words one by one, so the first run works with no configuration
at all. `backend.chat.model.build_model` falls back to it when no provider key is configured. Replace it with your
team, or drop it and always configure a model.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from agents import Handoff, Model, ModelResponse, ModelSettings, Tool, Usage
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

from backend.chat.titles import TitleAnswer
from backend.files.content import attached_descriptions

OFFLINE_LABEL = "(offline demo)"
OFFLINE_MODEL_NAME = "offline-demo"

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
    last_user = _last_user(items)
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
        parsed: object = json.loads(output)
    except ValueError:
        parsed = {"error": output}
    result: dict[str, Any] = parsed if isinstance(parsed, dict) else {"error": str(parsed)}
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


# --- the offline model in a team: which agent does what (handoffs, client tools, help) ------------------------------

Step = tuple[str, dict[str, Any]] | str
HANDOFF_PREFIX = "transfer_to_"  # the SDK's default handoff tool names
DESCRIBE_SETUP = "describe_setup"
MAX_HANDOFFS_PER_REQUEST = 3
_HELP_REQUEST = re.compile(
    r"^(?:help\b|(?:what|how) can you (?:do|help)|what do you do|who are you|how does (?:this|it) work"
    r"|how do i (?:configure|set up|use)|what are your (?:skills|features|agents))",
    re.I,
)
_CLIENT_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(
            r"^(?:please )?(?:use|switch to|change to|turn on|enable|go|set(?: the theme to)?) (?:the )?"
            r"(?P<theme>dark|light)(?: theme| mode)?\b",
            re.I,
        ),
        "set_theme",
    ),
    (re.compile(r"^(?P<theme>dark|light) (?:theme|mode)(?: please)?$", re.I), "set_theme"),
    (re.compile(r"^what time is it\b", re.I), "get_client_context"),
    (re.compile(r"^what(?:'s| is) (?:the |my )?(?:local )?time\b", re.I), "get_client_context"),
]
_ROUTE_WORDS = {"help": ("help", "explain", "configure"), "work": ("task", "todo", "to-do")}


def _calls_since_user(items: list[Any]) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    for item in reversed(items):
        if not isinstance(item, dict) or item.get("role") == "user":
            break
        if item.get("type") == "function_call":
            calls.append(item)
    return calls


def _request(items: list[Any], mcp_tools: Sequence[str]) -> tuple[str, dict[str, Any]] | None:
    """What the user's latest message asks for, as the tool that does it (`describe_setup` for help), or None."""
    user_text = next((_text_of(i) for i in reversed(items) if isinstance(i, dict) and i.get("role") == "user"), "")
    sentence = user_text.strip().rstrip(".!?").strip()
    if _HELP_REQUEST.match(sentence):
        return DESCRIBE_SETUP, {}
    for pattern, tool in _CLIENT_PATTERNS:
        match = pattern.match(sentence)
        if match:
            return tool, {k: v.lower() for k, v in match.groupdict().items()}
    user_only = [i for i in items if isinstance(i, dict) and i.get("role") == "user"]
    planned = _plan(user_only, mcp_tools)
    return planned if isinstance(planned, tuple) else None


def _handoff_for(kind: str, handoffs: Mapping[str, str], visited: set[str]) -> str | None:
    """The handoff tool toward the agent for `kind` ("help" or "work"), else back to triage, else any other."""
    open_ = {tool: agent for tool, agent in handoffs.items() if agent not in visited}

    def named(words: Sequence[str]) -> str | None:
        return next((tool for tool, agent in open_.items() if any(w in agent.lower() for w in words)), None)

    return named(_ROUTE_WORDS[kind]) or named(("triage",)) or next(iter(open_), None)


def _team_step(items: list[Any], tools: Sequence[str], handoffs: Mapping[str, str]) -> Step:
    """Decide the next step as one agent of a team: do the work if this agent has the tool, else hand off.

    The offline model sees only the running agent's tools and handoffs. It calls the tool the request needs when the
    agent has it; otherwise it calls the handoff toward the agent that does (by agent name: "help" for help
    requests, "task" for the rest, else back to "triage"); with neither, it answers with the offline help.

    Args:
        items: The model input so far.
        tools: Names of the running agent's tools.
        handoffs: The running agent's handoffs: tool name → agent name.

    Returns:
        A tool call `(name, args)` (a handoff is one too) or the reply text.
    """
    mcp_tools = [name for name in tools if name.startswith(MCP_TOOL_PREFIX)]
    calls = _calls_since_user(items)
    after = _after_tool_result(items, calls, mcp_tools)
    if after is not None:
        return after
    received = _attachments_ack(_last_user(items))  # whichever agent runs: the demo cannot read files, only list them
    if received:
        return received
    wanted = _request(items, mcp_tools)
    return _own_step(wanted, tools) or _hand_off(wanted, tools, handoffs, calls) or help_text(mcp_tools)


def _last_user(items: list[Any]) -> dict[str, Any]:
    """The user's latest message item (empty if there is none)."""
    return next((i for i in reversed(items) if isinstance(i, dict) and i.get("role") == "user"), {})


def _after_tool_result(items: list[Any], calls: list[dict[str, Any]], mcp_tools: Sequence[str]) -> Step | None:
    """The reply to a tool's result; None when the last item is no tool result, or the result of a handoff."""
    last = items[-1] if items else {}
    if not (isinstance(last, dict) and last.get("type") == "function_call_output"):
        return None
    name = next((str(c.get("name")) for c in calls if c.get("call_id") == last.get("call_id")), "")
    if name.startswith(HANDOFF_PREFIX):
        return None
    return _describe_team_result(name, str(last.get("output", ""))) or _plan(items, mcp_tools)


def _own_step(wanted: tuple[str, dict[str, Any]] | None, tools: Sequence[str]) -> Step | None:
    """The request's tool when this agent has it, `describe_setup` for anything else when it has that; else None."""
    if wanted is not None and wanted[0] in tools:
        return wanted
    if wanted is None and DESCRIBE_SETUP in tools:
        return DESCRIBE_SETUP, {}
    return None


def _hand_off(
    wanted: tuple[str, dict[str, Any]] | None,
    tools: Sequence[str],
    handoffs: Mapping[str, str],
    calls: list[dict[str, Any]],
) -> Step | None:
    """The handoff toward the agent for the request, unless this request already moved enough or this agent works."""
    transfers = [str(c.get("name")) for c in calls if str(c.get("name")).startswith(HANDOFF_PREFIX)]
    if len(transfers) >= MAX_HANDOFFS_PER_REQUEST or (wanted is None and set(tools) - {DESCRIBE_SETUP}):
        return None
    kind = "work" if wanted is not None and wanted[0] != DESCRIBE_SETUP else "help"
    visited = {handoffs[t] for t in transfers if t in handoffs}
    target = _handoff_for(kind, handoffs, visited)
    return (target, {}) if target is not None else None


def _describe_team_result(tool: str, output: str) -> str | None:
    """The reply after `describe_setup` or a client tool; None for other tools."""
    if tool not in {DESCRIBE_SETUP, "set_theme", "get_client_context"}:
        return None
    try:
        result = json.loads(output)
    except ValueError:
        result = {"error": output}
    if not isinstance(result, dict):
        result = {"value": result}
    if "error" in result:
        return f"{OFFLINE_LABEL} That didn't work: {result['error']}"
    if tool == DESCRIBE_SETUP:
        return _setup_text(result)
    if tool == "set_theme":
        theme = result.get("theme")
        return f"{OFFLINE_LABEL} Done: the page now uses the {theme} theme." if theme else f"{OFFLINE_LABEL} Done."
    time_ = next((result[k] for k in ("local_time", "localTime", "time", "now") if k in result), None)
    zone = next((result[k] for k in ("time_zone", "timeZone", "timezone") if k in result), None)
    if time_ is None:
        facts = ", ".join(f"{key}: {value}" for key, value in result.items())
        return f"{OFFLINE_LABEL} Your browser says: {facts}."
    return f"{OFFLINE_LABEL} It's {time_} for you" + (f" ({zone})." if zone else ".")


def _setup_text(setup: dict[str, Any]) -> str:
    team = [agent for agent in setup.get("team", []) if isinstance(agent, dict)]
    mcp_tools = [name for agent in team for name in agent.get("mcp_tools", [])]
    members = "; ".join(
        f"{agent.get('name')}: {str(agent.get('job', '')).rstrip('.')}"
        + (
            f" (tools: {', '.join(agent.get('task_tools', []) + agent.get('client_tools', []))})"
            if agent.get("task_tools") or agent.get("client_tools")
            else ""
        )
        for agent in team
    )
    return (
        f"{help_text(mcp_tools)} This assistant is a team of agents that hand the conversation to each other: "
        f'{members}. Also try "what can you do", "use the dark theme" or "what time is it for me". '
        "Files can be attached to a message; MCP_SERVERS adds external tool servers."
    )


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

    model = OFFLINE_MODEL_NAME  # the model string the usage ledger records (as `LitellmModel.model`)

    def __init__(self, word_delay: float = 0.02) -> None:
        """Create the model.

        Args:
            word_delay: Seconds between streamed words, so the UI visibly streams.
        """
        self.word_delay = word_delay

    def _output(
        self, input: str | list[Any], tools: Sequence[Tool] = (), handoffs: Sequence[Handoff[Any, Any]] = ()
    ) -> list[ResponseOutputMessage | ResponseFunctionToolCall]:
        items = [{"role": "user", "content": input}] if isinstance(input, str) else input
        step = _team_step(items, [tool.name for tool in tools], {h.tool_name: h.agent_name for h in handoffs})
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
        output_schema: Any = None,
        handoffs: Sequence[Handoff[Any, Any]] = (),
        *args: Any,
        **kwargs: Any,
    ) -> ModelResponse:
        """Answer in one piece (non-streaming runs)."""
        output = self._output(input, tools, handoffs)
        first = output[0].content[0] if isinstance(output[0], ResponseOutputMessage) else None
        text = first.text if isinstance(first, ResponseOutputText) else ""
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

    async def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[Any],
        model_settings: ModelSettings | None = None,
        tools: Sequence[Tool] = (),
        output_schema: Any = None,
        handoffs: Sequence[Handoff[Any, Any]] = (),
        *args: Any,
        **kwargs: Any,
    ) -> AsyncIterator[Any]:
        """Stream the answer word by word, as Responses API events."""
        output = self._output(input, tools, handoffs)
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


class OfflineTitles:
    """The offline demo's conversation titles: deterministic, from the first message's first words (no model call)."""

    @property
    def model(self) -> None:
        """No model: the offline titles cost nothing and leave no ledger row."""
        return None

    async def title(self, message: str) -> TitleAnswer:
        """The first six words of `message`, each capitalized (`add buy milk` gives `Add Buy Milk`)."""
        return TitleAnswer(offline_title(message))


def offline_title(message: str) -> str:
    """The offline demo's title of a conversation that starts with `message` (the same message, the same title)."""
    words = re.findall("[^\\W_][\\w'\u2019-]*", message)[:6]
    return " ".join(word[:1].upper() + word[1:] for word in words)
