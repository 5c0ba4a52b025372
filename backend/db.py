"""Database engine, per-request sessions and migrations, for PostgreSQL (psycopg 3) and SQLite (aiosqlite)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic.config import Config
from litestar.datastructures import State
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from alembic import command
from backend.settings import PROJECT_ROOT, Settings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 5


@dataclass(frozen=True, slots=True)
class Database:
    """The engine and the session factory of one app instance."""

    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]

    async def ping(self) -> None:
        """Run `SELECT 1`; raises if the database is unreachable or does not answer in time."""
        async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS), self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # SQLite ignores ON DELETE CASCADE unless foreign keys are switched on for each connection.
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def create_database(settings: Settings) -> Database:
    """Build the engine and session factory for the configured URL.

    Args:
        settings: Application settings; only `database_url` is read.

    Returns:
        A `Database`. For SQLite the file's folder is created if missing.
    """
    url = make_url(settings.database_url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True, "hide_parameters": True}  # no row values in logs or errors
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": CONNECT_TIMEOUT_SECONDS}
    else:
        kwargs.update(
            pool_size=10,
            max_overflow=20,
            pool_timeout=10,
            connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
        )
    engine = create_async_engine(url, **kwargs)
    if url.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return Database(engine=engine, sessions=async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False))


def get_database(state: State) -> Database:
    """Return the app's `Database` from application state."""
    return state.database


async def provide_db_session(state: State) -> AsyncIterator[AsyncSession]:
    """Yield one session per request. Never use it inside an SSE body: Litestar closes it before streaming."""
    async with get_database(state).sessions() as session:
        yield session


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    """Build the Alembic config from `pyproject.toml`, optionally bound to a live connection or a URL.

    Args:
        connection: A sync connection for `env.py` to migrate on.
        url: A database URL, used when no connection is given.

    Returns:
        An Alembic `Config`.
    """
    cfg = Config(toml_file=str(PROJECT_ROOT / "pyproject.toml"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    if url is not None:
        cfg.attributes["database_url"] = url
    return cfg


async def upgrade_to_head(database: Database) -> None:
    """Apply every pending migration on the app's own engine (`alembic upgrade head`)."""

    def _upgrade(sync_conn: Connection) -> None:
        command.upgrade(alembic_config(connection=sync_conn), "head")

    async with database.engine.begin() as conn:
        await conn.run_sync(_upgrade)
    log.info("database schema is at the latest migration")
