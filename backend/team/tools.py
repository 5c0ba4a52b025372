"""The example tools' wiring: the shared task tools (`backend.tasks.tools`) as Agents SDK function tools."""

from __future__ import annotations

import json
from typing import Any

from agents import FunctionTool, RunContextWrapper

from backend.chat.context import ChatContext
from backend.chat.widgets import WidgetError, widget_json
from backend.tasks.tools import TASK_TOOLS, TaskTool, ToolScope, to_json


def function_tool_for(tool: TaskTool) -> FunctionTool:
    """Generate the Agents SDK function tool from a shared task tool definition.

    The tool acts for the run context's user; its arguments never name a user. Expected failures (unknown task,
    invalid arguments) go back to the model as `{"error": ...}`.

    Args:
        tool: The shared definition (name, description, input model, behaviour).

    Returns:
        A function tool with the definition's name, description and JSON input schema.
    """

    async def approval_needed(ctx: RunContextWrapper[ChatContext], arguments: dict[str, Any], _call_id: str) -> bool:
        scope = ToolScope(user_id=ctx.context.user_id, database=ctx.context.database)
        return await tool.approval_needed(scope, arguments)

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
        needs_approval=tool.needs_approval if isinstance(tool.needs_approval, bool) else approval_needed,
    )


TOOLS = [function_tool_for(tool) for tool in TASK_TOOLS]
"""The task tools as the agents' function tools."""
