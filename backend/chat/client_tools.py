"""Client-side tools: the model calls them like any tool, and the browser runs them.

When the model calls one, the run pauses (the SDK's human-in-the-loop interruption, as for approvals): the stream sends
`client_tool_call {id, name, args}` and ends with `done` (`finish_reason: "client_tool"`). The page runs the tool and
posts `POST /chatkit {thread_id, client_tool_results: [{id, result}]}`; the run resumes in whichever process receives
that request, and the tool's output is the browser's result (see `backend.chat.actions`).

Add a client tool by adding a `ClientTool` to `CLIENT_TOOLS` and implementing it in `backend/web/static/`.

A protocol whose client defines its own tools for a run (AG-UI's `RunAgentInput.tools`) passes them as
`SendMessage.client_tools` / `AnswerPause.client_tools`: `with_client_tools` gives every agent of the team those
tools for that run only, and they pause and resume exactly like the tools above.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agents import Agent, FunctionTool
from agents.tool_context import ToolContext

from backend.chat.context import ChatContext
from backend.chat.team import agents_by_name
from backend.errors import InvalidInputError


@dataclass(frozen=True, slots=True)
class ClientTool:
    """A tool the browser implements: its name, what it does, and its JSON input schema."""

    name: str
    description: str
    parameters: dict[str, object]


CLIENT_TOOLS: tuple[ClientTool, ...] = (
    ClientTool(
        name="set_theme",
        description="Switch the chat page between the light and the dark theme (or follow the system setting).",
        parameters={
            "type": "object",
            "properties": {"theme": {"type": "string", "enum": ["light", "dark", "system"]}},
            "required": ["theme"],
            "additionalProperties": False,
        },
    ),
    ClientTool(
        name="get_client_context",
        description="Read the user's local time, time zone, locale and window size from their browser.",
        parameters={"type": "object", "properties": {}, "additionalProperties": False},
    ),
)
CLIENT_TOOL_NAMES = frozenset(tool.name for tool in CLIENT_TOOLS)


def _function_tool(tool: ClientTool) -> FunctionTool:
    async def answer_from_the_browser(ctx: ToolContext[ChatContext], _arguments: str) -> str:
        # Runs only after the run resumed with the browser's result (the pause is the SDK's approval interruption).
        return ctx.context.client_results.get(ctx.tool_call_id, '{"error": "no result from the browser"}')

    return FunctionTool(
        name=tool.name,
        description=tool.description,
        params_json_schema=tool.parameters,
        on_invoke_tool=answer_from_the_browser,
        strict_json_schema=False,
        needs_approval=True,
    )


def client_function_tools() -> list[FunctionTool]:
    """The Agents SDK function tools of every client tool (give them to the agents that may call them)."""
    return [_function_tool(tool) for tool in CLIENT_TOOLS]


def with_client_tools(start: Agent[ChatContext], tools: Sequence[ClientTool]) -> Agent[ChatContext]:
    """The team reachable from `start`, each agent with `tools` added, for one run; `start` itself when none.

    The agents are shallow copies (same names, instructions, models and MCP servers) whose `Agent` handoffs point at
    each other's copies, so a handoff keeps the run's tools and a paused run's state loads from the copy as from the
    original (the SDK finds agents by name).

    Raises:
        InvalidInputError: A tool's name is already a tool of the team (a server tool, one of `CLIENT_TOOLS`), or two
            of `tools` share a name.
    """
    if not tools:
        return start
    team = agents_by_name(start)
    taken = {tool.name for agent in team.values() for tool in agent.tools}
    names = [tool.name for tool in tools]
    clash = next((name for name in names if name in taken), None) or next(
        (name for i, name in enumerate(names) if name in names[:i]), None
    )
    if clash is not None:
        raise InvalidInputError(f"tools: {clash!r} is already a tool of this assistant, or named twice")
    extra = [_function_tool(tool) for tool in tools]
    copies = {name: agent.clone(tools=[*agent.tools, *extra]) for name, agent in team.items()}
    for copy in copies.values():
        copy.handoffs = [copies.get(h.name, h) if isinstance(h, Agent) else h for h in copy.handoffs]
    return copies[start.name]
