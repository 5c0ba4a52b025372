"""Prometheus metrics: the series, and their exposition (`GET /metrics` behind a bearer token, or a separate port).

Every series lives in `prometheus_client`'s default registry. With several worker processes (`WORKERS > 1`)
`python -m backend` points `PROMETHEUS_MULTIPROC_DIR` at a fresh directory before the workers start, each worker
writes its values there, and a scrape sums them (`MultiProcessCollector`); gauges say how (`livesum`: live
processes only).

Exposure (`METRICS`): `off` (the default: no `/metrics`), `token` (`GET /metrics` on the app's port, with
`Authorization: Bearer $METRICS_TOKEN`), or `port` (an open HTTP server on `METRICS_PORT`, for a network only the
scraper reaches).
"""

from __future__ import annotations

import hmac
import os
import tempfile

from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.security.jwt import Token
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.errors import NotFoundError
from backend.settings import Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_SECONDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

TURNS_STARTED = Counter("chat_turns_started", "Turn segments started (a new turn, or a paused one resuming).")
TURNS_FINISHED = Counter("chat_turns_finished", "Turn segments finished, by how they ended.", ["outcome"])
TIME_TO_FIRST_TOKEN = Histogram(
    "chat_time_to_first_token_seconds", "From a turn's start to its first text or reasoning delta.", buckets=_SECONDS
)
TURN_DURATION = Histogram(
    "chat_turn_duration_seconds", "From a turn segment's start to its stored end.", buckets=_SECONDS
)
MODEL_CALLS = Counter(
    "chat_model_calls", "Model calls, by model and outcome (ok, error, cancelled).", ["model", "outcome"]
)
MODEL_TOKENS = Counter(
    "chat_model_tokens", "Model tokens, by model and kind (input, output, cached, reasoning).", ["model", "kind"]
)
MODEL_COST = Counter("chat_model_cost_usd", "Model cost in USD from LiteLLM's cost map, by model.", ["model"])
MODEL_ERRORS = Counter("chat_model_errors", "Turns ended by a model or run error, by error code.", ["code"])
TOOL_CALLS = Counter("chat_tool_calls", "Tool calls that returned, by tool.", ["tool"])
TOOL_ERRORS = Counter("chat_tool_errors", "Tool calls that returned an error, by tool.", ["tool"])
WAITS = Counter("chat_waits", "Turns paused for the user, by kind (approval_required, client_tool).", ["kind"])
RUNNING_TURNS = Gauge("chat_running_turns", "Turn segments running now.", multiprocess_mode="livesum")
ACTIVE_STREAMS = Gauge("chat_active_streams", "SSE streams being sent now.", multiprocess_mode="livesum")
EVENT_LOG_BATCH = Histogram(
    "chat_event_log_batch_events",
    "Events per event-log write.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000),
)
EVENT_LOG_FLUSH = Histogram(
    "chat_event_log_flush_seconds",
    "Time to write one event-log batch.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
)
LISTENER_CONNECTED = Gauge(
    "chat_listener_connected", "1 while the LISTEN connection is up (PostgreSQL).", multiprocess_mode="livesum"
)
LISTENER_RECONNECTS = Counter("chat_listener_reconnects", "Times the LISTEN connection was lost.")
DB_CHECKED_OUT = Gauge("db_pool_checked_out", "Pooled connections in use.", multiprocess_mode="livesum")
DB_POOL_TIMEOUTS = Counter("db_pool_timeouts", "Requests that found no pooled connection in time (503).")


def registry() -> CollectorRegistry:
    """The registry to expose: this process's, or every worker's in multi-process mode."""
    if os.environ.get(MULTIPROC_ENV):
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return merged
    return REGISTRY


def prepare_multiprocess(workers: int) -> None:
    """Before workers start: give them a fresh shared directory for their values (unless one is configured)."""
    if workers > 1 and not os.environ.get(MULTIPROC_ENV):
        os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="chatkit-metrics-")


def serve_port(settings: Settings) -> None:
    """`METRICS=port`: serve the metrics, open, on `METRICS_PORT` (a daemon thread of this process)."""
    start_http_server(settings.metrics_port, addr=settings.host, registry=registry())


def exposition() -> bytes:
    """The current values in Prometheus' text format."""
    return generate_latest(registry())


@get("/metrics", include_in_schema=False, sync_to_thread=False)
def metrics_endpoint(request: Request[object, Token, State]) -> Response[bytes]:
    """`METRICS=token`: the metrics, for a bearer of `METRICS_TOKEN` (anything else: 404, as if absent)."""
    settings: Settings = request.app.state.settings
    given = request.headers.get("authorization", "")
    expected = f"Bearer {settings.metrics_token}"
    if settings.metrics != "token" or not hmac.compare_digest(given.encode(), expected.encode()):
        raise NotFoundError("No such resource.")
    return Response(exposition(), media_type=CONTENT_TYPE_LATEST)


def instrument_pool(engine: AsyncEngine) -> None:
    """Count the engine's pooled connections in use (`db_pool_checked_out`)."""

    def checked_out(*_args: object) -> None:
        DB_CHECKED_OUT.inc()

    def checked_in(*_args: object) -> None:
        DB_CHECKED_OUT.dec()

    event.listen(engine.sync_engine.pool, "checkout", checked_out)
    event.listen(engine.sync_engine.pool, "checkin", checked_in)
