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

import os

import backend  # noqa: F401  (the same LiteLLM/Agents environment as ours, before anything imports them)

# isort: split
from agents import ModelSettings
from agents.extensions.models.litellm_model import LitellmModel
from chatkit.server import StreamingResult
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from tests.bench import lag
from tests.bench.serving import serve_peer
from tests.fakes.chatkit_server import MODEL, MemoryStore, PeerServer, mirror_team


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
