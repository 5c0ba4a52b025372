"""The example team, the one part of the app meant to be replaced: its agents, their tools and the offline demo model.

- `agents`: the team (triage, a task assistant, help) and its starting agent, `build_agent(model, model_settings,
  mcp_servers=...)`; the app gives that agent to the chat runtime (`backend.chat.service.ChatService`).
- `tools`: the example task tools (`backend.tasks.tools`) as the agents' function tools.
- `offline`: the offline demo model that plays the team when no provider key is configured.

The runtime (`backend.chat`) never imports the task tools or the MCP client; it knows a team only by its starting
agent (`backend.chat.team.agents_by_name` finds the others). Replace this package with your own agents and tools.
"""
