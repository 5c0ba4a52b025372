"""The SDK floor: the least any server built on the Agents SDK and LiteLLM pays for the same reply.

A bare ASGI app (no framework, no database, no event log, no ChatKit) under the same uvicorn: for each
``POST /chatkit {"message": ...}`` it runs ``Runner.run_streamed`` on this project's agent team (rebuilt with stub
tools by `tests.bench.chatkit_peer.mirror_team`, exactly what the ChatKit peer runs) with the SDK's ``LitellmModel``
(or, with ``SDK_FLOOR_MODEL=finish_chunk|usage_chunk``, this backend's ``FinishChunkLitellmModel``) on the fake,
and writes each text delta as our ``text`` frame, then ``done`` and ``data: [DONE]``. Nothing else:
no persistence, no translation of the other events, no rejoin.

Both this backend and the ChatKit peer pay this much per reply on top of their own work, so it bounds what either
can reach: CPU per reply below the SDK floor is impossible without changing the Agents SDK or LiteLLM path.

Run: ``python -m tests.bench.sdk_floor --port P --upstream http://127.0.0.1:FAKE/v1beta [--workers N]``
(or set ``SDK_FLOOR_UPSTREAM``).
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from tests.bench.serving import DONE, SSE_HEADERS, chat_message, frame, serve_peer

# The Agents SDK and LiteLLM are imported in the workers' start-up, not here: with several workers uvicorn's spawned
# children import this module first, and a slow import there gets them killed and respawned (see server.py).
_run: Any = None
"""Starts a run of the team on a user message (set at start-up)."""


def _build_team() -> None:
    global _run
    import backend  # noqa: F401  (the same LiteLLM/Agents environment as ours and the peer, before they load)

    # isort: split
    from agents import ModelSettings, RunConfig, Runner
    from agents.extensions.models.litellm_model import LitellmModel

    from backend.chat.litellm_model import USAGE_SOURCES, FinishChunkLitellmModel
    from tests.bench.chatkit_peer import MODEL, mirror_team

    base_url, source = os.environ["SDK_FLOOR_UPSTREAM"], os.environ.get("SDK_FLOOR_MODEL")
    if source in USAGE_SOURCES:  # our model, as the backend runs it
        model: LitellmModel = FinishChunkLitellmModel(
            MODEL, base_url=base_url, api_key="bench-key", usage_source=source
        )
        include_usage = None if source == "finish_chunk" else True
    else:
        model, include_usage = LitellmModel(MODEL, base_url=base_url, api_key="bench-key"), True
    team = mirror_team(model, ModelSettings(include_usage=include_usage, extra_args={"timeout": 120.0}))
    config = RunConfig(tracing_disabled=True)
    _run = lambda text: Runner.run_streamed(team, text, context=None, run_config=config)  # noqa: E731


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ASGI entry point."""
    user_text = await chat_message(scope, receive, send, _build_team)
    if user_text is None:
        return
    assert _run is not None
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    ids = {"conversation_id": str(uuid.uuid4()), "message_id": str(uuid.uuid4())}
    await send({"type": "http.response.body", "more_body": True, "body": frame({"type": "start", **ids})})
    result = _run(user_text)
    async for event in result.stream_events():
        if event.type == "raw_response_event" and event.data.type == "response.output_text.delta":
            text = frame({"type": "text", "content": event.data.delta})
            await send({"type": "http.response.body", "more_body": True, "body": text})
    done = {"type": "done", **ids, "finish_reason": "stop"}
    await send({"type": "http.response.body", "body": frame(done) + DONE, "more_body": False})


def main(argv: list[str] | None = None) -> None:
    """Serve it with uvicorn."""
    serve_peer(argv, module="sdk_floor", app="app", env_var="SDK_FLOOR_UPSTREAM", port=8003)


if __name__ == "__main__":
    main()
