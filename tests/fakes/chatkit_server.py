"""The official ChatKit Python server (`ChatKitServer`, from the test-only `openai-chatkit`) on our team, in memory.

Shared by the benchmark's peer (`tests/bench/chatkit_peer.py`, which serves it with FastAPI) and the differential test
of our ChatKit adapter (`tests/protocols/test_chatkit_differential.py`, which calls `PeerServer.process` directly).
Same agent shape as ours: the team `backend.team.agents.build_agent` builds (triage handing off to the task assistant
or the help agent, the same instructions, tool names, descriptions and JSON schemas), with every tool answering an
empty task list; `ChatKitServer.respond` as the ChatKit docs write it (history -> `Runner.run_streamed` ->
`stream_agent_response`), and an in-memory store like the ChatKit examples'. Nothing under ``backend/`` imports it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import backend  # noqa: F401  (the same LiteLLM/Agents environment as ours, before anything imports them)

# isort: split
from agents import Agent, FunctionTool, ModelSettings, RunContextWrapper, Runner, Tool, TResponseInputItem
from agents.extensions.models.litellm_model import LitellmModel
from chatkit.agents import AgentContext, ThreadItemConverter, stream_agent_response
from chatkit.server import ChatKitServer
from chatkit.store import NotFoundError, Store
from chatkit.types import (
    AssistantMessageItem,
    Attachment,
    Page,
    ThreadItem,
    ThreadMetadata,
    ThreadStreamEvent,
    UserMessageItem,
)

from backend.chat.team import agents_by_name
from backend.team.agents import build_agent

MODEL = "gemini/gemini-2.5-flash"  # the backend's default model string
EMPTY = json.dumps({"tasks": [], "truncated": False})


async def _empty_tasks(ctx: RunContextWrapper[AgentContext[None]], arguments: str) -> str:
    return EMPTY


def _stub(tool: Tool) -> Tool:
    """The same tool as the model sees it (name, description, schema), answering an empty task list."""
    if not isinstance(tool, FunctionTool):
        return tool
    return FunctionTool(
        name=tool.name,
        description=tool.description,
        params_json_schema=tool.params_json_schema,
        on_invoke_tool=_empty_tasks,
        strict_json_schema=tool.strict_json_schema,
    )


def mirror_team(model: LitellmModel, settings: ModelSettings) -> Agent[AgentContext[None]]:
    """Our team (`build_agent`) rebuilt for ChatKit's context, with stub tools; returns its starting agent."""
    ours = build_agent(model, settings)
    team = agents_by_name(ours)
    peers: dict[str, Agent[AgentContext[None]]] = {
        name: Agent(
            name=agent.name,
            handoff_description=agent.handoff_description,
            instructions=agent.instructions,  # type: ignore[arg-type]
            tools=[_stub(tool) for tool in agent.tools],
            model=model,
            model_settings=settings,
        )
        for name, agent in team.items()
    }
    for name, agent in team.items():
        peers[name].handoffs = [peers[target.name] for target in agent.handoffs if isinstance(target, Agent)]
    return peers[ours.name]


class MemoryStore(Store[None]):
    """Threads and items in dicts (what the ChatKit examples use for a demo)."""

    def __init__(self) -> None:
        self.threads: dict[str, ThreadMetadata] = {}
        self.items: dict[str, list[ThreadItem]] = {}

    async def load_thread(self, thread_id: str, context: None) -> ThreadMetadata:
        try:
            return self.threads[thread_id]
        except KeyError:
            raise NotFoundError(thread_id) from None

    async def save_thread(self, thread: ThreadMetadata, context: None) -> None:
        self.threads[thread.id] = thread
        self.items.setdefault(thread.id, [])

    async def load_thread_items(
        self, thread_id: str, after: str | None, limit: int, order: str, context: None
    ) -> Page[ThreadItem]:
        items = list(self.items.get(thread_id, []))
        if order == "desc":
            items.reverse()
        if after is not None:
            ids = [i.id for i in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        page = items[:limit]
        return Page(data=page, has_more=len(items) > limit, after=page[-1].id if page else None)

    async def add_thread_item(self, thread_id: str, item: ThreadItem, context: None) -> None:
        self.items.setdefault(thread_id, []).append(item)

    async def save_item(self, thread_id: str, item: ThreadItem, context: None) -> None:
        items = self.items.setdefault(thread_id, [])
        for index, existing in enumerate(items):
            if existing.id == item.id:
                items[index] = item
                return
        items.append(item)

    async def load_item(self, thread_id: str, item_id: str, context: None) -> ThreadItem:
        for item in self.items.get(thread_id, []):
            if item.id == item_id:
                return item
        raise NotFoundError(item_id)

    async def delete_thread(self, thread_id: str, context: None) -> None:
        self.threads.pop(thread_id, None)
        self.items.pop(thread_id, None)

    async def delete_thread_item(self, thread_id: str, item_id: str, context: None) -> None:
        self.items[thread_id] = [i for i in self.items.get(thread_id, []) if i.id != item_id]

    async def save_attachment(self, attachment: Attachment, context: None) -> None:
        raise NotImplementedError

    async def load_attachment(self, attachment_id: str, context: None) -> Attachment:
        raise NotImplementedError

    async def delete_attachment(self, attachment_id: str, context: None) -> None:
        raise NotImplementedError

    async def load_threads(self, limit: int, after: str | None, order: str, context: None) -> Page[ThreadMetadata]:
        threads = list(self.threads.values())[:limit]
        return Page(data=threads, has_more=False, after=None)


class ChatCompletionsConverter(ThreadItemConverter):
    """ChatKit's default converter, except that an assistant message goes back to the model as plain text.

    The default sends it as `output_text` content in an input message, which the Agents SDK's chat-completions
    converter (the path of `LitellmModel`) refuses (`UserError: Unknown content`), so with LiteLLM every second message
    of a thread fails. An integration on LiteLLM has to override this; the peer does it the smallest way.
    """

    async def assistant_message_to_input(self, item: AssistantMessageItem) -> TResponseInputItem | None:
        return {"role": "assistant", "content": "".join(c.text for c in item.content)}


class PeerServer(ChatKitServer[None]):
    """`ChatKitServer.respond` as the ChatKit docs write it: history → Runner.run_streamed → stream_agent_response."""

    def __init__(self, store: MemoryStore, agent: Agent[AgentContext[None]]) -> None:
        super().__init__(store)
        self.agent = agent

    async def respond(
        self, thread: ThreadMetadata, input_user_message: UserMessageItem | None, context: None
    ) -> AsyncIterator[ThreadStreamEvent]:
        items = await self.store.load_thread_items(thread.id, None, 100, "asc", context)
        agent_context = AgentContext(thread=thread, store=self.store, request_context=context)
        result = Runner.run_streamed(
            self.agent, await ChatCompletionsConverter().to_agent_input(items.data), context=agent_context
        )
        async for event in stream_agent_response(agent_context, result):
            yield event
