"""`python -m backend`: check the settings, migrate the database when configured to, and serve with uvicorn."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import uvicorn

from backend.db import SchemaNotCurrentError, create_database, prepare_schema
from backend.settings import Settings, SettingsError, load_settings

log = logging.getLogger("backend")


async def _prepare(settings: Settings) -> None:
    database = create_database(settings)
    try:
        await prepare_schema(database, settings)
    finally:
        await database.dispose()


def main(app_factory: str = "backend.app:create_app") -> None:
    """Start the server; a bad setting, a failed migration or an unmigrated database exits with one line.

    Args:
        app_factory: The `module:function` uvicorn imports in each worker to build the app.
    """
    try:
        settings = load_settings()
    except SettingsError as error:
        sys.exit(f"error: {error}")
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(_prepare(settings))
    except SchemaNotCurrentError as error:
        sys.exit(f"error: {error}")
    except Exception as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        sys.exit(f"error: could not migrate the database at DATABASE_URL: {type(error).__name__}: {reason}")
    if settings.should_migrate_on_startup:
        # Migrated once here, so the workers must not race each other doing it again.
        os.environ["MIGRATE_ON_STARTUP"] = "false"
    log.info("serving on http://%s:%s (%s worker(s))", settings.host, settings.port, settings.workers)
    uvicorn.run(
        app_factory,
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
