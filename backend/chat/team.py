"""What the turn runtime needs of a team of agents: every agent reachable from the starting one, by name.

The team itself (its agents, tools and offline demo model) is replaceable and lives in `backend.team`; the runtime
only receives its starting agent (`ChatService(..., agent)`).
"""

from __future__ import annotations

from agents import Agent

from backend.chat.context import ChatContext


def agents_by_name(start: Agent[ChatContext]) -> dict[str, Agent[ChatContext]]:
    """Every agent reachable from `start` through handoffs, by name (the first one found wins a name clash).

    Only handoffs given as `Agent` objects are followed; list your agents directly in `handoffs=[...]`.

    Args:
        start: The starting agent.

    Returns:
        The team, starting with `start`.
    """
    found: dict[str, Agent[ChatContext]] = {}
    pending = [start]
    while pending:
        agent = pending.pop(0)
        if agent.name in found:
            continue
        found[agent.name] = agent
        pending.extend(target for target in agent.handoffs if isinstance(target, Agent))
    return found
