"""Alembic environment: async engine, SQLModel metadata, batch mode on SQLite, URL from settings."""

import asyncio
import logging
import re

from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

from alembic import context
from backend.settings import get_settings, normalize_database_url

config = context.config
target_metadata = SQLModel.metadata

if not logging.getLogger().handlers:
    # The CLI (`alembic upgrade head`): say what it did. Inside the app or the tests, their logging already decides.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)-5.5s [%(name)s] %(message)s")
    logging.getLogger("alembic").setLevel(logging.INFO)


def database_url() -> str:
    """The URL passed in by the app or tests, else the one from settings."""
    url = config.attributes.get("database_url")
    return normalize_database_url(url) if url else get_settings().database_url


# The full-text search objects of migration 0008 live outside the models (a dialect's own DDL): the PostgreSQL
# `search_vector` columns and their GIN indexes, the SQLite FTS5 tables and their shadow tables.
SEARCH_OBJECTS = re.compile(r"^(search_vector|ix_\w+_search|\w+_fts(_\w+)?)$")


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Leave the search objects out of autogenerate's comparison (`alembic check`)."""
    return not (name and type_ in {"table", "column", "index"} and SEARCH_OBJECTS.match(name))


def do_run_migrations(connection: Connection) -> None:
    """Run the migrations on one connection."""
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    """Open an engine for the CLI and migrate."""
    engine = create_async_engine(database_url(), poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(do_run_migrations)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=database_url().startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()
elif (conn := config.attributes.get("connection")) is not None:
    do_run_migrations(conn)
else:
    asyncio.run(run_async_migrations())
