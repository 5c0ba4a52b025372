"""`python -m backend`: check the settings, migrate the database when configured to, and serve with uvicorn.

`python -m backend usage ...` and `python -m backend limits ...` are the operator's commands (`backend.usage.cli`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from typing import TYPE_CHECKING

import uvicorn
from uvicorn.supervisors import Multiprocess

if TYPE_CHECKING:
    from backend.settings import Settings

# With WORKERS > 1 every worker is a spawned process that imports this module (as `__mp_main__`) before it starts
# answering uvicorn's health pings; a worker silent for `WORKER_START_SECONDS` is killed and respawned. So this
# module imports only uvicorn at the top: the app's packages (seconds of CPU, far more on a loaded machine) load in
# `main()`, and in each worker once its ping thread runs.
log = logging.getLogger("backend")
STARTUP_FAILURE = 3  # uvicorn's exit code when the server could not start
WORKER_START_SECONDS = 30  # uvicorn's worker health-check timeout (its default, 5 s, respawns slow cold starts)


def log_serving(sock: socket.socket, workers: int) -> None:
    """Log the address a bound socket serves, with the real port (PORT=0 picks a free one)."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    log.info("serving on http://%s:%s (%s worker(s))", shown, port, workers)


class Server(uvicorn.Server):
    """uvicorn's server, logging "serving on" only once its socket is bound (after the app's start-up succeeded)."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start as uvicorn does, then log the bound address."""
        await super().startup(sockets=sockets)
        if self.started and self.servers and self.servers[0].sockets:
            log_serving(self.servers[0].sockets[0], 1)


async def _prepare(settings: Settings) -> None:
    from backend.db import create_database, prepare_schema

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
    from backend import metrics
    from backend.db import SchemaNotCurrentError, UnsupportedDatabaseError
    from backend.logs import configure_logging, logging_config
    from backend.settings import SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError as error:
        sys.exit(f"error: {error}")
    configure_logging(settings)
    try:
        asyncio.run(_prepare(settings))
    except (SchemaNotCurrentError, UnsupportedDatabaseError) as error:
        sys.exit(f"error: {error}")
    except Exception as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        sys.exit(f"error: could not migrate the database at DATABASE_URL: {type(error).__name__}: {reason}")
    metrics.prepare_multiprocess(settings.workers)
    if settings.metrics == "port" and settings.workers > 1:
        metrics.serve_port(settings)  # one server for every worker's values
    if settings.should_migrate_on_startup:
        # Migrated once here, so the workers must not race each other doing it again.
        os.environ["MIGRATE_ON_STARTUP"] = "false"
    config = uvicorn.Config(
        app_factory,
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=logging_config(settings),
        log_level=settings.log_level.lower(),
        proxy_headers=True,
        timeout_graceful_shutdown=10,
        timeout_worker_healthcheck=WORKER_START_SECONDS,
        # Only the h11 parser enforces this; httptools (the default) has no header limit, so the app's own check
        # (MAX_HEADER_BYTES, 431) is what answers. Put a proxy limit in front for memory safety at the socket.
        h11_max_incomplete_event_size=settings.max_header_bytes,
    )
    if config.workers > 1:
        sock = config.bind_socket()
        log_serving(sock, config.workers)
        Multiprocess(config, sockets=[sock]).run()
        return
    server = Server(config)
    server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)


if __name__ == "__main__":
    if sys.argv[1:2] in (["usage"], ["limits"]):  # the operator's commands (see backend.usage.cli)
        from backend.usage import cli

        cli.main(sys.argv[1:])
    else:
        main()
