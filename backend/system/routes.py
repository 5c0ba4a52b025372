"""Liveness and readiness probes; no auth."""

from __future__ import annotations

import logging

from litestar import Response, get
from litestar.datastructures import State
from litestar.status_codes import HTTP_503_SERVICE_UNAVAILABLE
from sqlalchemy.exc import SQLAlchemyError

from backend.db import get_database
from backend.errors import DATABASE_UNAVAILABLE, error_body

log = logging.getLogger(__name__)


@get("/health", operation_id="Health", tags=["system"], exclude_from_auth=True)
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@get("/ready", operation_id="Ready", tags=["system"], exclude_from_auth=True)
async def ready(state: State) -> Response[dict[str, object]]:
    """Readiness: the database answers `SELECT 1`; 503 otherwise."""
    try:
        await get_database(state).ping()
    except (SQLAlchemyError, OSError, TimeoutError) as error:
        log.warning("readiness check failed: %s", type(error).__name__)
        return Response(
            error_body("database_unavailable", DATABASE_UNAVAILABLE), status_code=HTTP_503_SERVICE_UNAVAILABLE
        )
    return Response({"status": "ready"})
