"""Tools a client defines for one run (AG-UI's frontend tools): every agent of the team gets them for that run only."""

from __future__ import annotations

import pytest
from agents import Agent, FunctionTool

from backend.chat.client_tools import ClientTool, with_client_tools
from backend.chat.context import ChatContext
from backend.chat.team import agents_by_name
from backend.errors import InvalidInputError

BANNER = ClientTool("show_banner", "Show a banner.", {"type": "object", "properties": {"text": {"type": "string"}}})


def team() -> Agent[ChatContext]:
    start = Agent[ChatContext](name="Triage")
    tasks = Agent[ChatContext](name="Tasks", tools=[], handoffs=[start])
    start.handoffs = [tasks]
    return start


def names(agent: Agent[ChatContext]) -> list[str]:
    return [tool.name for tool in agent.tools]


def test_every_agent_of_the_run_gets_the_tools_and_the_team_itself_is_untouched() -> None:
    start = team()
    run_start = with_client_tools(start, (BANNER,))
    copies = agents_by_name(run_start)
    assert sorted(copies) == ["Tasks", "Triage"]
    assert all(names(agent) == ["show_banner"] for agent in copies.values())
    assert copies["Tasks"].handoffs == [run_start], "a handoff keeps the run's tools"
    tool = copies["Tasks"].tools[0]
    assert isinstance(tool, FunctionTool) and tool.needs_approval is True, "it pauses the run like CLIENT_TOOLS"
    assert all(names(agent) == [] for agent in agents_by_name(start).values())
    assert with_client_tools(start, ()) is start


@pytest.mark.parametrize("clash", ["list_tasks", "twice"])
def test_a_name_the_team_has_or_a_name_given_twice_is_refused(clash: str) -> None:
    start = team()
    start.tools = [  # a server tool of the team, not one of CLIENT_TOOLS: the team's own tools are what is checked
        FunctionTool(name="list_tasks", description="", params_json_schema={}, on_invoke_tool=None)
    ]  # type: ignore[arg-type]
    tools = (BANNER, BANNER) if clash == "twice" else (ClientTool(clash, "x", {}),)
    with pytest.raises(InvalidInputError):
        with_client_tools(start, tools)
