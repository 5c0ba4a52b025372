"""The example agent: a task assistant.

Replace this module with your own agent and tools; the streaming code only needs `build_agent(model,
model_settings)` returning an `Agent[ChatContext]`.

The tools take the user from the run context, never from the model's arguments, so no conversation can reach
another user's tasks whatever the model says.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from agents import Agent, FunctionTool, Model, ModelSettings, RunContextWrapper
from agents.mcp import MCPServer

from backend.chat.client_tools import client_function_tools
from backend.chat.context import ChatContext
from backend.chat.widgets import WidgetError, widget_json
from backend.mcp.client import MCP_AGENT_CONFIG
from backend.tasks.tools import TASK_TOOLS, TaskTool, ToolScope, to_json

INSTRUCTIONS = """You are a concise task assistant inside a chat app. You manage the user's to-do list with your
tools: add_task, list_tasks, complete_task, update_task and delete_task. Tasks may be referred to by title or id.
Call list_tasks when you need to know what exists. After a tool runs, confirm what changed in one short sentence.
Tools whose names start with mcp_ come from other services; use them when they fit the request.
For anything unrelated to tasks, answer briefly and helpfully."""


def function_tool_for(tool: TaskTool) -> FunctionTool:
    """Generate the Agents SDK function tool from a shared task tool definition.

    The tool acts for the run context's user; its arguments never name a user. Expected failures (unknown task,
    invalid arguments) go back to the model as `{"error": ...}`.

    Args:
        tool: The shared definition (name, description, input model, behaviour).

    Returns:
        A function tool with the definition's name, description and JSON input schema.
    """

    async def on_invoke(ctx: RunContextWrapper[ChatContext], raw_arguments: str) -> str:
        try:
            arguments = json.loads(raw_arguments or "{}")
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):
            return to_json({"error": "The arguments must be a JSON object."})
        scope = ToolScope(user_id=ctx.context.user_id, database=ctx.context.database)
        result = await tool.invoke(scope, arguments)
        widget = tool.widget(result) if tool.widget is not None and ctx.context.ui is not None else None
        if widget is not None and ctx.context.ui is not None:
            try:
                ctx.context.ui.show_widget(widget.id or tool.name, widget_json(widget))
            except WidgetError as error:  # the tool's error, never a broken stream
                return to_json({**result, "widget_error": str(error)})
        return to_json(result)

    return FunctionTool(
        name=tool.name,
        description=tool.description,
        params_json_schema=tool.input_schema(),
        on_invoke_tool=on_invoke,
        strict_json_schema=False,
        needs_approval=tool.needs_approval,
    )


TOOLS = [function_tool_for(tool) for tool in TASK_TOOLS]


def build_agent(
    model: Model, model_settings: ModelSettings, mcp_servers: Sequence[MCPServer] = ()
) -> Agent[ChatContext]:
    """Build the task assistant.

    Args:
        model: The model to run (LiteLLM or the offline demo model), from `backend.chat.model`.
        model_settings: Settings such as usage reporting and retries, from `backend.chat.model`.
        mcp_servers: External MCP servers (`backend.mcp.client`). A server that is not connected lists no tools, so
            the agent never needs rebuilding when one drops or comes back.

    Returns:
        The agent every chat turn runs.
    """
    return Agent[ChatContext](
        name="Task assistant",
        instructions=INSTRUCTIONS,
        tools=[*TOOLS, *client_function_tools()],
        mcp_servers=list(mcp_servers),
        mcp_config=MCP_AGENT_CONFIG,
        model=model,
        model_settings=model_settings,
    )
