"""Bench-only launcher: our server with candidate optimisations applied by monkeypatching, to prove them first.

``BENCH_TWEAKS=a,b python -m tests.bench.server`` behaves like ``python -m backend`` (same settings from the
environment, same migration step, same uvicorn options) but serves ``tests.bench.server:create_app``, which applies
the tweaks in every worker process before building the app. ``BENCH_TWEAKS=all`` applies every tweak in `SAFE`.
Nothing in backend/ is edited; each tweak below names the backend change it stands for.

Tweaks:

* ``quiet_litellm``: LiteLLM's logger at WARNING (at LOG_LEVEL=INFO it logs two lines per model call, through
  Litestar's queue handler). Backend change: ``logging.getLogger("LiteLLM").setLevel(logging.WARNING)``.
* ``no_send_timeout``: ``EventSourceResponse(send_timeout=None)``: sse-starlette wraps *every* chunk send in
  ``anyio.move_on_after`` (a cancel scope per chunk) when a send timeout is set.
* ``inline_builder``: LiteLLM builds the complete response of every stream (``stream_chunk_builder``) in a worker
  thread at the end of each upstream call; run it inline instead (no thread hop, no GIL ping-pong).
* ``lean_builder``: skip that rebuild: only the usage is needed, and Gemini reports it cumulatively in its last chunk.
  (Stands for driving LiteLLM so that it does not rebuild the response, or for a direct Gemini model.)
* ``rowcmp``: keyset pagination with a row-value comparison ``(updated_at, id) < (:t, :id)``, which PostgreSQL can
  use as an index condition (the current OR form is only a filter: the deep page scans every row before it).
* ``gc_freeze``: ``gc.freeze()`` after start-up, so the collector stops re-walking the ~1M objects imported at start.
* ``no_sdk_timeout``: ``ModelSettings(timeout=None)`` and the same timeout given to LiteLLM's HTTP call
  (``extra_args={"timeout": ...}``): with an SDK-level timeout the Agents SDK runs every model stream in an extra
  task and hands *each event* across two asyncio queues under ``asyncio.wait(timeout=...)``.
* ``big_executor``: a default thread pool of 32 threads instead of ``min(32, CPUs + 4)`` (6 here): LiteLLM's
  ``acompletion`` runs the synchronous ``completion`` setup in it for every model call. Backend change:
  ``loop.set_default_executor(ThreadPoolExecutor(32))`` at start-up.
* ``gc_thaw``: a diagnostic: ``gc.unfreeze()`` right after the app's start-up ``gc.freeze()`` (backend/app.py),
  i.e. the server as it was before that change.
* ``pool45``: a diagnostic: 45 pooled connections per worker instead of 10 + 20 overflow.
* ``identity_cache``: the Agents SDK's per-turn agent identity map (a JSON signature of the whole team) built once
  per starting agent (see `_identity_cache`).
* ``direct_gemini``: replace LiteLLM with `tests.bench.gemini_direct.GeminiDirectModel`, an Agents SDK `Model` that
  streams Gemini's REST API itself (a prototype of a `backend/chat/model.py` change; see that module's limits).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from typing import Any

import backend  # noqa: F401  (offline LiteLLM/Agents environment before anything imports them)

log = logging.getLogger("tests.bench.server")

SAFE = [
    "quiet_litellm",
    "no_send_timeout",
    "inline_builder",
    "rowcmp",
    "gc_freeze",
    "no_sdk_timeout",
]
ALL = [*SAFE, "lean_builder"]  # direct_gemini replaces LiteLLM altogether: name it explicitly


def _quiet_litellm() -> None:
    import litellm  # noqa: F401

    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Litestar's logging config (applied at app start) may reset levels: patch its configure step too.
    os.environ["BENCH_QUIET_LITELLM"] = "1"


def _no_send_timeout() -> None:
    import backend.chat.routes as routes

    routes.SEND_TIMEOUT_SECONDS = None  # type: ignore[assignment]


def _inline_builder() -> None:
    from litellm.litellm_core_utils.streaming_handler import CustomStreamWrapper

    async def build_inline(self: Any) -> Any:
        return self._build_complete_streaming_response()

    CustomStreamWrapper._async_build_complete_streaming_response = build_inline  # type: ignore[method-assign]


def _lean_builder() -> None:
    import litellm
    from litellm.litellm_core_utils.streaming_handler import CustomStreamWrapper

    original = CustomStreamWrapper._async_build_complete_streaming_response

    async def usage_only(self: Any) -> Any:
        usage = next((u for c in reversed(self.chunks) if (u := getattr(c, "usage", None)) is not None), None)
        if usage is None:
            return await original(self)
        return litellm.ModelResponse(model=self.model, usage=usage)

    CustomStreamWrapper._async_build_complete_streaming_response = usage_only  # type: ignore[method-assign]


def _rowcmp() -> None:
    import uuid
    from datetime import datetime

    from sqlalchemy import tuple_

    import backend.conversations.service as conversations
    import backend.tasks.service as tasks
    from backend.errors import InvalidInputError
    from backend.pagination import BAD_CURSOR, decode_cursor

    def after_time_cursor(time_column: Any, id_column: Any, cursor: str, *, descending: bool) -> Any:
        moment_text, id_text = decode_cursor(cursor, 2)
        try:
            moment, row_id = datetime.fromisoformat(moment_text), uuid.UUID(id_text)
        except (TypeError, ValueError):
            raise InvalidInputError(BAD_CURSOR) from None
        if moment.tzinfo is None:
            raise InvalidInputError(BAD_CURSOR)
        key, bound = tuple_(time_column, id_column), tuple_(moment, row_id)
        return key < bound if descending else key > bound

    conversations.after_time_cursor = after_time_cursor  # type: ignore[assignment]
    tasks.after_time_cursor = after_time_cursor  # type: ignore[assignment]


def _direct_gemini() -> None:
    import backend.app as app_module
    import backend.chat.model as model_module
    from tests.bench.gemini_direct import GeminiDirectModel

    original = model_module.build_model

    def build_model(settings: Any) -> Any:
        model, model_settings = original(settings)
        if settings.use_offline_model:
            return model, model_settings
        return GeminiDirectModel(settings.model, settings.gemini_api_base, settings.gemini_api_key), model_settings

    model_module.build_model = build_model  # type: ignore[assignment]
    app_module.build_model = build_model  # type: ignore[attr-defined]


def _no_sdk_timeout() -> None:
    import dataclasses

    import backend.app as app_module
    import backend.chat.model as model_module

    original = model_module.build_model

    def build_model(settings: Any) -> Any:
        model, model_settings = original(settings)
        extra = dict(model_settings.extra_args or {})
        extra.setdefault("timeout", settings.model_timeout_seconds)  # LiteLLM's own HTTP timeout instead
        return model, dataclasses.replace(model_settings, timeout=None, extra_args=extra)

    model_module.build_model = build_model  # type: ignore[assignment]
    app_module.build_model = build_model  # type: ignore[attr-defined]


def _pool45() -> None:
    import backend.db as db_module

    original = db_module.create_async_engine

    def create_engine(url: Any, **kwargs: Any) -> Any:
        if "pool_size" in kwargs:
            kwargs.update(pool_size=45, max_overflow=0)
        return original(url, **kwargs)

    db_module.create_async_engine = create_engine  # type: ignore[assignment]


def _big_executor() -> None:
    os.environ["BENCH_BIG_EXECUTOR"] = "1"  # applied in create_app, in the worker's running loop


def _gc_thaw() -> None:
    os.environ["BENCH_GC_THAW"] = "1"  # applied in create_app, after the app's own start-up froze the heap


def _gc_freeze() -> None:
    os.environ["BENCH_GC_FREEZE"] = "1"  # applied in create_app, after every import


def _no_event_log() -> None:
    """Durable turns without their event log: nothing is queued for the batched writer (the cost of the log)."""
    from backend.chat.live import Hub

    def record(self: Hub, message_id: Any, event: Any) -> None:
        return None

    Hub.record = record  # type: ignore[method-assign]


def _quotas() -> None:
    """Every per-user limit on, set high enough never to refuse: the price of the quota and rate-limit checks.

    Run as a variant next to the plain server (``--variant quotas=quotas``): the difference in CPU per reply is what
    the checks cost (the ledger rows are written in both).
    """
    os.environ.update(
        TOKENS_PER_DAY=str(10**12),
        TOKENS_PER_MONTH=str(10**12),
        USD_PER_MONTH=str(10**9),
        MESSAGES_PER_MINUTE=str(10**9),
        MAX_TURNS_PER_USER=str(10**6),
    )


def _gc_young() -> None:
    """A young generation of 10,000 allocations instead of 700: fewer young collections and promotions per turn."""
    gc.set_threshold(10_000, 10, 10)


def _identity_cache() -> None:
    """The Agents SDK's agent identity keys built once per starting agent instead of at every turn of every run.

    `serialize_tool_use_tracker` (called after each model call of a streamed run, and at its end) rebuilds the whole
    team's identity map: a JSON signature of every reachable agent (instructions, model settings via
    `dataclasses.asdict`, tools, handoffs), about 1.5 ms for our team on this VM, four times per three-call reply. A
    team built once at start-up and never mutated has the same keys every time. Backend change: the same memo in a
    guarded seam module (it replaces a private SDK function, `tool_use_tracker._build_agent_identity_keys_by_id`).
    """
    from agents.run_internal import tool_use_tracker

    original = tool_use_tracker._build_agent_identity_keys_by_id
    cache: dict[int, tuple[Any, dict[int, str]]] = {}

    def cached(agent: Any) -> dict[int, str]:
        hit = cache.get(id(agent))
        if hit is None or hit[0] is not agent:
            hit = cache[id(agent)] = (agent, original(agent))
        return hit[1]

    tool_use_tracker._build_agent_identity_keys_by_id = cached  # type: ignore[attr-defined]


TWEAKS = {
    "identity_cache": _identity_cache,
    "gc_young": _gc_young,
    "quotas": _quotas,
    "no_event_log": _no_event_log,
    "quiet_litellm": _quiet_litellm,
    "no_send_timeout": _no_send_timeout,
    "inline_builder": _inline_builder,
    "lean_builder": _lean_builder,
    "rowcmp": _rowcmp,
    "gc_freeze": _gc_freeze,
    "direct_gemini": _direct_gemini,
    "no_sdk_timeout": _no_sdk_timeout,
    "pool45": _pool45,
    "big_executor": _big_executor,
    "gc_thaw": _gc_thaw,
}


def selected() -> list[str]:
    """The tweaks named in BENCH_TWEAKS (``all`` = every one, ``safe`` = SAFE)."""
    names: list[str] = []
    for name in (n.strip() for n in os.environ.get("BENCH_TWEAKS", "").split(",")):
        if not name:
            continue
        if name == "all":
            names += ALL
        elif name == "safe":
            names += SAFE
        elif name in TWEAKS:
            names.append(name)
        else:
            raise SystemExit(f"unknown tweak {name!r}; known: {', '.join(TWEAKS)}, safe, all")
    return list(dict.fromkeys(names))


def apply(names: list[str] | None = None) -> list[str]:
    """Apply tweaks (by default those in BENCH_TWEAKS); returns their names."""
    names = selected() if names is None else names
    for name in names:
        TWEAKS[name]()
    return names


_applied: list[str] = []


def create_app() -> Any:
    """The app factory uvicorn calls in each worker: apply the tweaks, then build the normal app.

    Not at import: with several workers, uvicorn's spawned children re-import this module as ``__mp_main__``
    before their health-check thread runs, and a slow import there gets them killed and respawned in a loop.
    """
    from litestar import Litestar

    from backend.app import create_app as real_create_app

    if not _applied:
        _applied.extend(apply())

    app: Litestar = real_create_app()
    if os.environ.get("BENCH_QUIET_LITELLM"):

        async def quiet(app_: Litestar) -> None:
            for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm"):
                logging.getLogger(name).setLevel(logging.WARNING)

        app.on_startup.append(quiet)
    if os.environ.get("BENCH_GC_FREEZE"):

        async def freeze(app_: Litestar) -> None:
            gc.collect()
            gc.freeze()

        app.on_startup.append(freeze)

    if os.environ.get("BENCH_GC_THAW"):

        async def thaw(app_: Litestar) -> None:  # on_startup hooks run after the lifespan that froze the heap
            gc.unfreeze()

        app.on_startup.append(thaw)
    if os.environ.get("BENCH_BIG_EXECUTOR"):

        async def big_executor(app_: Litestar) -> None:
            from concurrent.futures import ThreadPoolExecutor

            asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(32))

        app.on_startup.append(big_executor)

    async def sample_lag(app_: Litestar) -> None:
        from tests.bench import lag

        lag.start()

    app.on_startup.append(sample_lag)
    log.warning("bench server: tweaks applied: %s", ", ".join(_applied) or "none")
    return app


def main() -> None:
    """Like ``python -m backend``, serving this module's factory."""
    from backend.__main__ import main as serve

    serve("tests.bench.server:create_app")


if __name__ == "__main__":
    main()
