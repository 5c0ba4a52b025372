"""The application factory: routes, dependencies, auth, CORS, error mapping and the database lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.di import Provide
from litestar.logging import LoggingConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin

from backend.auth import USER_DEPENDENCY, auth_middleware
from backend.chat.agent import build_agent
from backend.chat.model import build_model
from backend.chat.routes import ChatController
from backend.chat.service import ChatService
from backend.conversations.routes import ConversationController
from backend.db import create_database, prepare_schema, provide_db_session
from backend.errors import EXCEPTION_HANDLERS
from backend.openapi import document_api
from backend.settings import Settings, get_settings
from backend.system.routes import health, ready
from backend.tasks.routes import TaskController
from backend.web.routes import WEB_HANDLERS

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the Litestar application.

    Args:
        settings: Settings to use; defaults to the process-wide settings from the environment and `.env`.

    Returns:
        The ASGI application.
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        database = create_database(settings)
        app.state.database = database
        app.state.settings = settings
        app.state.chat_service = ChatService(database, settings, build_agent(*build_model(settings)))
        try:
            await prepare_schema(database, settings)
            yield
        finally:
            await database.dispose()

    return Litestar(
        route_handlers=[health, ready, ChatController, ConversationController, TaskController, *WEB_HANDLERS],
        dependencies={"db_session": Provide(provide_db_session), **USER_DEPENDENCY},
        middleware=[auth_middleware(settings)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=[lifespan],
        on_startup=[lambda app: document_api(app, settings)],
        cors_config=CORSConfig(allow_origins=settings.cors_origins, allow_credentials=False)
        if settings.cors_origins
        else None,
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="ChatKit backend", version="0.1.0", path="/schema", render_plugins=[SwaggerRenderPlugin()]
        ),
        logging_config=LoggingConfig(
            root={"level": settings.log_level, "handlers": ["queue_listener"]},
            log_exceptions="never",
            disable_stack_trace={404, 405, 401, 409, 413, 422},
        ),
        debug=False,
    )
