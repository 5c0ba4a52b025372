"""The example team: a triage agent that hands the conversation to a task assistant or a help agent.

Replace this module with your own agents and tools; the rest of the app only needs `build_agent(model,
model_settings, mcp_servers=...)` returning the starting agent (an `Agent[ChatContext]`).

The team (Agents SDK handoffs, `handoffs=[...]`):
- "Triage" starts new conversations and only routes: it hands off to a specialist (or answers small talk itself).
- "Task assistant" manages the user's tasks (the task tools, the external MCP servers' tools and the client tools).
- "Help" explains what the assistant can do and how to configure it, with one read-only tool, `describe_setup`.
Both specialists can hand back to triage, so every agent is reachable from every other one: a paused run's stored
state loads from whichever agent started it. Agent names are stored (in paused states and on every assistant
message), so keep them stable.

The tools take the user from the run context, never from the model's arguments, so no conversation can reach
another user's tasks whatever the model says.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from agents import Agent, FunctionTool, Model, ModelSettings, RunContextWrapper, Tool
from agents.extensions.handoff_prompt import prompt_with_handoff_instructions
from agents.mcp import MCPServer

from backend.chat.client_tools import CLIENT_TOOL_NAMES, client_function_tools
from backend.chat.context import ChatContext
from backend.chat.team import agents_by_name
from backend.mcp.client import MCP_AGENT_CONFIG
from backend.team.tools import TOOLS

TRIAGE = "Triage"
TASK_ASSISTANT = "Task assistant"
HELP = "Help"
DESCRIBE_SETUP = "describe_setup"

TRIAGE_INSTRUCTIONS = """You are the front desk of a chat app. You do not do the work yourself: hand the
conversation to the right specialist at once. Hand off to the task assistant for anything about the user's to-do list
or tasks, for the page's theme (light or dark) and for the user's local time. Hand off to the help agent when the user
asks what you can do, how the assistant works or how to configure it (models, keys, MCP servers, attachments).
Answer a greeting or small talk yourself, in one short sentence."""

TASK_INSTRUCTIONS = """You are a concise task assistant inside a chat app. You manage the user's to-do list with your
tools: add_task, list_tasks, complete_task, update_task and delete_task. Tasks may be referred to by title or id.
Call list_tasks when you need to know what exists. After a tool runs, confirm what changed in one short sentence.
Tools whose names start with mcp_ come from other services; use them when they fit the request.
set_theme switches the page between light and dark; get_client_context reads the user's local time, time zone and
locale from their browser. If the user asks for something that is not yours to do, hand back to triage."""

HELP_INSTRUCTIONS = """You explain what this assistant can do and how to configure it. Call describe_setup first: it
lists the agents of the team, the tools each one has (including tools from MCP servers) and the settings that matter.
Then answer from it in a few short sentences. Configuration is by environment variables: GEMINI_API_KEY (and MODEL,
any LiteLLM model string) for a real model, MCP_SERVERS (JSON, or a path to a JSON file) for external tool servers,
and files can be attached to messages (uploaded first, then sent with the message). If the user wants something
done rather than explained, hand back to triage."""

SETUP_SETTINGS = {
    "GEMINI_API_KEY": "the model provider's key; without it the offline demo model answers",
    "MODEL": "any LiteLLM model string (default gemini/gemini-2.5-flash)",
    "MCP_SERVERS": "external MCP tool servers: JSON, or a path to a JSON file (stdio or streamable HTTP)",
    "attachments": "attach files to a message (POST /api/files, then `attachments` in POST /chatkit)",
}


def _tool_groups(tools: Sequence[Tool]) -> dict[str, list[str]]:
    names = [tool.name for tool in tools]
    return {
        "task_tools": [name for name in names if name not in CLIENT_TOOL_NAMES and not name.startswith("mcp_")],
        "mcp_tools": [name for name in names if name.startswith("mcp_")],
        "client_tools": [name for name in names if name in CLIENT_TOOL_NAMES],
    }


def describe_setup_tool(start: Agent[ChatContext]) -> FunctionTool:
    """A read-only tool that describes the team: every agent, its job and tools, and the settings that matter.

    The MCP tools are those of the servers connected right now (their cached tool lists: no round trip).

    Args:
        start: The starting agent; the team is every agent reachable from it.

    Returns:
        The `describe_setup` function tool (no arguments; returns JSON).
    """

    async def describe(ctx: RunContextWrapper[ChatContext], _arguments: str) -> str:
        team = []
        for agent in agents_by_name(start).values():
            tools = [tool for tool in await agent.get_all_tools(ctx) if tool.name != DESCRIBE_SETUP]
            team.append({"name": agent.name, "job": agent.handoff_description or "", **_tool_groups(tools)})
        return json.dumps({"team": team, "settings": SETUP_SETTINGS}, ensure_ascii=False)

    return FunctionTool(
        name=DESCRIBE_SETUP,
        description="Describe this assistant: its agents, what each does, their tools (with MCP tools) and settings.",
        params_json_schema={"type": "object", "properties": {}, "additionalProperties": False},
        on_invoke_tool=describe,
        strict_json_schema=False,
    )


def build_agent(
    model: Model, model_settings: ModelSettings, mcp_servers: Sequence[MCPServer] = ()
) -> Agent[ChatContext]:
    """Build the team and return its starting agent, triage.

    Args:
        model: The model every agent runs (LiteLLM or the offline demo model), from `backend.chat.model`.
        model_settings: Settings such as usage reporting and retries, from `backend.chat.model`.
        mcp_servers: External MCP servers (`backend.mcp.client`), given to the task assistant. A server that is not
            connected lists no tools, so the agents never need rebuilding when one drops or comes back.

    Returns:
        The triage agent; `agents_by_name` finds the others from it.
    """
    triage = Agent[ChatContext](
        name=TRIAGE,
        handoff_description="Routes the conversation to the right specialist.",
        instructions=prompt_with_handoff_instructions(TRIAGE_INSTRUCTIONS),
        model=model,
        model_settings=model_settings,
    )
    tasks = Agent[ChatContext](
        name=TASK_ASSISTANT,
        handoff_description="Manages the user's tasks, the page's theme and reads the user's local time.",
        instructions=prompt_with_handoff_instructions(TASK_INSTRUCTIONS),
        tools=[*TOOLS, *client_function_tools()],
        mcp_servers=list(mcp_servers),
        mcp_config=MCP_AGENT_CONFIG,
        handoffs=[triage],
        model=model,
        model_settings=model_settings,
    )
    helper = Agent[ChatContext](
        name=HELP,
        handoff_description="Explains what the assistant can do and how to configure it.",
        instructions=prompt_with_handoff_instructions(HELP_INSTRUCTIONS),
        tools=[describe_setup_tool(triage)],
        handoffs=[triage],
        model=model,
        model_settings=model_settings,
    )
    triage.handoffs = [tasks, helper]
    return triage
