"""Liveness and readiness probes; no auth."""

from __future__ import annotations

import logging

from litestar import get
from litestar.datastructures import State
from sqlalchemy.exc import SQLAlchemyError

from backend.db import get_database, probe_schema
from backend.errors import DATABASE_NOT_MIGRATED, DATABASE_UNAVAILABLE, UnavailableError

log = logging.getLogger(__name__)


@get("/health", operation_id="Health", tags=["system"], exclude_from_auth=True, security=[{}])
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@get("/ready", operation_id="Ready", tags=["system"], exclude_from_auth=True, security=[{}])
async def ready(state: State) -> dict[str, str]:
    """Readiness: the database answers within 1.5 s and its schema is at this code's migration head.

    Answers 503 `database_unavailable` when the database does not answer in time, and 503 `database_not_migrated`
    when its Alembic revision is behind this code's head or it was never migrated.
    """
    try:
        status = await probe_schema(get_database(state))
    except (SQLAlchemyError, OSError, TimeoutError) as error:
        log.warning("readiness check failed: %s", type(error).__name__)
        raise UnavailableError(DATABASE_UNAVAILABLE, code="database_unavailable") from None
    if status in ("behind", "empty"):
        log.warning("readiness check failed: the database schema is %s", status)
        raise UnavailableError(DATABASE_NOT_MIGRATED, code="database_not_migrated")
    return {"status": "ready"}
