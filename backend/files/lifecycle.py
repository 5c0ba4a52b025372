"""The periodic sweep of unattached uploads, and the lifespan hook that creates the storage and runs the sweep."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar

from backend.db import Database
from backend.files.service import sweep_unattached
from backend.files.storage import FileStorage, create_storage
from backend.settings import Settings

log = logging.getLogger(__name__)


async def sweep_once(database: Database, storage: FileStorage, settings: Settings) -> int:
    """Run one sweep in a fresh session; return how many uploads it removed."""
    async with database.sessions() as session:
        return len(await sweep_unattached(session, storage, settings.file_unattached_ttl_seconds))


async def run_sweeper(
    database: Database, settings: Settings, stop_event: asyncio.Event, storage: FileStorage | None = None
) -> None:
    """Sweep unattached uploads every `FILE_SWEEP_INTERVAL_SECONDS` until `stop_event` is set.

    Every worker process may run one: each sweep only deletes rows it locked itself. A failing sweep is logged and
    retried at the next interval.

    Args:
        database: The app's database.
        settings: Application settings (TTL, interval, storage backend).
        stop_event: Set it to end the loop.
        storage: The storage backend; built from the settings when omitted.
    """
    storage = storage or create_storage(settings)
    while not stop_event.is_set():
        try:
            await sweep_once(database, storage, settings)
        except Exception as error:
            log.warning("file sweep failed: %s", type(error).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop_event.wait(), settings.file_sweep_interval_seconds)


@asynccontextmanager
async def files_lifespan(app: Litestar) -> AsyncIterator[None]:
    """Create the storage backend in `app.state.file_storage` and run the sweeper while the app runs.

    Must come after the lifespan that sets `app.state.database` and `app.state.settings`.
    """
    settings: Settings = app.state.settings
    storage = create_storage(settings)
    app.state.file_storage = storage
    stop = asyncio.Event()
    task = asyncio.create_task(run_sweeper(app.state.database, settings, stop, storage), name="file-sweeper")
    try:
        yield
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await task
