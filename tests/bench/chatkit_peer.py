"""The peer: the official ChatKit Python server (`ChatKitServer`) doing the same job, for the same-run comparison.

Same agent shape as ours: the team `backend.team.agents.build_agent` builds (triage handing off to the task assistant
or the help agent, the same instructions, tool names, descriptions and JSON schemas), with every tool answering an
empty task list like the floor, so each new conversation is the same three upstream turns (handoff, tool call,
text) for both servers. The same environment as ours too (``import backend``: LiteLLM's local cost map, the SDK's
tracing off). The Agents SDK's `LitellmModel` on the same fake Gemini with the same model settings (usage on,
LiteLLM's HTTP timeout), an in-memory store, FastAPI on the same uvicorn (uvloop + httptools), one worker pinned
like ours. Each ``POST /chatkit`` is a ChatKit ``threads.create`` request; the load generator's ``chatkit``
protocol reads its ``thread.item.updated`` text deltas (see `tests.bench.loadgen`).

Needs the bench-only dependency group (``uv sync --group bench``: ``openai-chatkit``, ``fastapi``), which
`tests.bench.run` installs before it starts; nothing under ``backend/`` imports ``chatkit``.

Run: ``python -m tests.bench.chatkit_peer --port P --upstream http://127.0.0.1:FAKE/v1beta [--workers N]``.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator

import backend  # noqa: F401  (the same LiteLLM/Agents environment as ours, before anything imports them)

# isort: split
from agents import Agent, FunctionTool, ModelSettings, RunContextWrapper, Runner, Tool
from agents.extensions.models.litellm_model import LitellmModel
from chatkit.agents import AgentContext, simple_to_agent_input, stream_agent_response
from chatkit.server import ChatKitServer, StreamingResult
from chatkit.store import NotFoundError, Store
from chatkit.types import Attachment, Page, ThreadItem, ThreadMetadata, ThreadStreamEvent, UserMessageItem
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from backend.chat.team import agents_by_name
from backend.team.agents import build_agent
from tests.bench import lag
from tests.bench.serving import serve_peer

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
        result = Runner.run_streamed(self.agent, await simple_to_agent_input(items.data), context=agent_context)
        async for event in stream_agent_response(agent_context, result):
            yield event


def build_app() -> FastAPI:
    """The FastAPI app: ``POST /chatkit`` (ChatKit protocol) and ``GET /health``."""
    model = LitellmModel(MODEL, base_url=os.environ["PEER_UPSTREAM"], api_key="bench-key")
    settings = ModelSettings(include_usage=True, extra_args={"timeout": 120.0})
    server = PeerServer(MemoryStore(), mirror_team(model, settings))
    app = FastAPI(on_startup=[lag.start])

    @app.get("/health")
    async def health() -> Response:
        return Response("ok", media_type="text/plain")

    @app.post("/chatkit")
    async def chatkit(request: Request) -> Response:
        result = await server.process(await request.body(), None)
        if isinstance(result, StreamingResult):
            return StreamingResponse(result, media_type="text/event-stream")
        return Response(content=result.json, media_type="application/json")

    return app


def main(argv: list[str] | None = None) -> None:
    """Serve it with uvicorn."""
    serve_peer(argv, module="chatkit_peer", app="build_app", env_var="PEER_UPSTREAM", port=8002, factory=True)


if __name__ == "__main__":
    main()
