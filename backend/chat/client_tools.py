"""Client-side tools: the model calls them like any tool, and the browser runs them.

When the model calls one, the run pauses (the SDK's human-in-the-loop interruption, as for approvals): the stream sends
`client_tool_call {id, name, args}` and ends with `done` (`finish_reason: "client_tool"`). The page runs the tool and
posts `POST /chatkit {thread_id, client_tool_results: [{id, result}]}`; the run resumes in whichever process receives
that request, and the tool's output is the browser's result (see `backend.chat.actions`).

Add a client tool by adding a `ClientTool` to `CLIENT_TOOLS` and implementing it in `backend/web/static/`.
"""

from __future__ import annotations

from dataclasses import dataclass

from agents import FunctionTool
from agents.tool_context import ToolContext

from backend.chat.context import ChatContext


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
