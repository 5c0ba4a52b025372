"""The application factory: routes, dependencies, auth, CORS, error mapping and the database lifespan."""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.plugins.prometheus import PrometheusConfig

from backend import metrics, tracing
from backend.auth import USER_DEPENDENCY, auth_middleware
from backend.chat.model import build_model, build_title_model, warm_up
from backend.chat.routes import ChatController
from backend.chat.service import ChatService
from backend.conversations.access import ConversationAccess
from backend.conversations.routes import ConversationController
from backend.conversations.store import ConversationRows
from backend.db import create_database, prepare_schema, provide_db_session
from backend.errors import EXCEPTION_HANDLERS
from backend.files.access import FileAccess
from backend.files.lifecycle import files_lifespan
from backend.files.routes import files_router
from backend.http_guard import BodyGuard, transport_guard
from backend.logs import configure_logging
from backend.loopwatch import LoopWatch
from backend.mcp.client import McpServers
from backend.mcp.server import TaskMcpServer
from backend.openapi import document_api
from backend.protocols.agui.routes import agui_router
from backend.protocols.aisdk.routes import AiSdkController
from backend.protocols.chatkit.routes import chatkit_router
from backend.request_ids import RequestIdMiddleware
from backend.settings import Settings, get_settings
from backend.system.routes import health, ready
from backend.tasks.routes import TaskController
from backend.tasks.widgets import register_task_actions
from backend.team.agents import build_agent
from backend.usage.routes import get_usage
from backend.web.docs import docs_assets_router, swagger_plugin
from backend.web.routes import WEB_HANDLERS

log = logging.getLogger(__name__)
HTTP_METRICS = PrometheusConfig(app_name="chatkit", prefix="http", group_path=True, exclude=["^/metrics$"])
"""HTTP requests by method, route (its path template) and status: `http_requests_total`, `http_request_duration_
seconds`, `http_requests_in_progress`."""


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the Litestar application.

    Args:
        settings: Settings to use; defaults to the process-wide settings from the environment and `.env`.

    Returns:
        The ASGI application.
    """
    settings = settings or get_settings()
    configure_logging(settings)
    tracing.configure()  # only when OTEL_EXPORTER_OTLP_ENDPOINT is set
    task_mcp = TaskMcpServer(host=settings.host)
    register_task_actions()  # the task-list widget's `tasks.toggle` action (idempotent)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        database = create_database(settings)
        mcp_servers = McpServers(
            settings.mcp_servers,
            health_seconds=settings.mcp_health_seconds,
            reconnect_max_seconds=settings.mcp_reconnect_max_seconds,
        )
        app.state.database = database
        app.state.settings = settings
        if settings.metrics != "off":
            metrics.instrument_pool(database.engine)
        if settings.metrics == "port" and not os.environ.get(metrics.MULTIPROC_ENV):
            metrics.serve_port(settings)  # with several workers, `python -m backend` serves it once
        app.state.mcp_servers = mcp_servers
        model, model_settings = build_model(settings)
        chat_service = ChatService(
            database,
            settings,
            build_agent(model, model_settings, mcp_servers=mcp_servers.agent_servers),
            titles=build_title_model(settings),
        )
        app.state.chat_service = chat_service
        app.state.conversation_rows = ConversationRows(database, chat_service.file_storage)
        app.state.conversation_access = ConversationAccess(database, app.state.conversation_rows)
        app.state.file_access = FileAccess(database, chat_service.file_storage, settings)
        if settings.use_offline_model:
            log.warning(
                "offline demo model: replies come from the built-in demo, not %s (set GEMINI_API_KEY to use it)",
                settings.model,
            )
        try:
            await prepare_schema(database, settings)
            await mcp_servers.start(settings.mcp_connect_timeout_seconds)
            await chat_service.start()
            await warm_up(model, model_settings)  # before the freeze: what it loads is start-up heap too
            _freeze_startup_heap()
            watch = LoopWatch(settings.loop_stall_ms / 1000) if settings.loop_stall_ms > 0 else None
            if watch is not None:
                watch.start()
            app.state.loop_watch = watch
            try:
                async with task_mcp.running(database):
                    yield
            finally:
                if watch is not None:
                    await watch.stop()
                await chat_service.close()
        finally:
            await mcp_servers.stop()
            await database.dispose()

    app = Litestar(
        route_handlers=[
            health,
            ready,
            ChatController,
            AiSdkController,
            chatkit_router(settings),
            agui_router(settings),
            ConversationController,
            TaskController,
            task_mcp.mount(),
            files_router(settings),
            get_usage,
            *WEB_HANDLERS,
            docs_assets_router(),
            *([metrics.metrics_endpoint] if settings.metrics == "token" else []),
        ],
        dependencies={"db_session": Provide(provide_db_session), **USER_DEPENDENCY},
        # Outermost first: network/header rules before authentication, body checks once the route is known.
        middleware=[
            transport_guard(settings),
            *([HTTP_METRICS.middleware] if settings.metrics != "off" else []),
            auth_middleware(settings),
            BodyGuard,
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        plugins=tracing.http_plugins(),
        lifespan=[lifespan, files_lifespan],
        on_startup=[lambda app: document_api(app, settings)],
        cors_config=CORSConfig(allow_origins=settings.cors_origins, allow_credentials=False)
        if settings.cors_origins
        else None,
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="ChatKit backend", version="0.1.0", path="/schema", render_plugins=[swagger_plugin()]
        ),
        logging_config=None,  # configure_logging above; errors are logged by backend.errors, never by Litestar
        debug=False,
    )
    # Around everything, routing's own 404/405 included (route middleware runs only once a route matched).
    app.asgi_handler = RequestIdMiddleware(app.asgi_handler)
    return app


def _freeze_startup_heap() -> None:
    """Put everything alive after start-up out of the garbage collector's reach (`gc.freeze`).

    That is about half a million objects (LiteLLM, the Agents SDK, pydantic schemas). Without this, every full
    collection under load walks them all and holds the event loop for hundreds of milliseconds. They live as long as
    the process anyway; reference counting still frees whatever dies later.
    """
    gc.collect()
    gc.freeze()
