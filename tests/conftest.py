"""Shared fixtures: every database test runs on SQLite and, when TEST_DATABASE_URL is set, on PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from litestar import Litestar
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

import backend  # noqa: F401  (sets the offline LiteLLM/Agents environment before anything imports them)
from alembic import command
from backend.db import Database, alembic_config, create_database
from backend.settings import Settings, load_settings, normalize_database_url
from tests.fakes.gemini import FakeGemini
from tests.seeding import client_for

SECRET = "test-secret-that-is-at-least-32-bytes-long"
TABLES = (
    "message_feedback",
    "usage_records",
    "usage_daily",
    "user_limits",
    "rate_windows",
    "stream_tickets",
    "turn_events",
    "client_message_ids",
    "message_files",
    "file_blobs",
    "files",
    "messages",
    "conversations",
    "tasks",
    "instances",
)

_skipped_required: list[str] = []


# --- making CI fail when the PostgreSQL or browser tests did not run ----------------------------------------------


def _runs_on_postgres(nodeid: str) -> bool:
    """A test's PostgreSQL variant: `postgres` among its parameter ids (not merely in its name)."""
    _, _, params = nodeid.partition("[")
    return "postgres" in params.rstrip("]").split("-")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not report.skipped:
        return
    if os.environ.get("REQUIRE_POSTGRES") == "1" and _runs_on_postgres(report.nodeid):
        _skipped_required.append(report.nodeid)
    if os.environ.get("REQUIRE_BROWSER") == "1" and "browser" in report.keywords:
        _skipped_required.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _skipped_required:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                f"FAILED: {len(_skipped_required)} required PostgreSQL/browser tests were skipped, "
                f"e.g. {_skipped_required[0]}",
                red=True,
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# --- databases ----------------------------------------------------------------------------------------------------


def _migrate(url: str) -> None:
    command.upgrade(alembic_config(url=url), "head")


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated database URL: a temporary SQLite file, or TEST_DATABASE_URL for PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
    else:
        raw = os.environ.get("TEST_DATABASE_URL")
        if not raw:
            pytest.skip("PostgreSQL tests need TEST_DATABASE_URL (e.g. postgresql://postgres@127.0.0.1:5432/test)")
        url = normalize_database_url(raw)
    _migrate(url)
    return url


@pytest.fixture
async def clean_db(database_url: str) -> AsyncIterator[str]:
    """The database URL, emptied after the test."""
    yield database_url
    # SQLite: wait up to 30 s for the writer slot. Under CI's load, once, a browser test's server had just stopped
    # and something still held it past SQLite's default 5 s (what, was not found).
    connect_args = {"timeout": 30} if database_url.startswith("sqlite") else {}
    engine = create_async_engine(database_url, connect_args=connect_args)
    async with engine.begin() as conn:
        for table in TABLES:
            await conn.execute(text(f"DELETE FROM {table}"))
    await engine.dispose()


@pytest.fixture
def make_settings(clean_db: str, tmp_path: Path) -> Callable[..., Settings]:
    """Build settings on the test database; keyword arguments override any field."""

    def _make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": clean_db,
            "migrate_on_startup": False,
            "auth_secret": None,
            "gemini_api_key": None,
            "gemini_api_base": None,
            "offline_model": True,
            "titles": False,  # a title call would take a scripted turn of the fake Gemini; title tests turn it on
            "host": "127.0.0.1",
            "log_level": "WARNING",
            "cors_origins": [],
            "file_storage_dir": tmp_path / "files",
        }
        values.update(overrides)
        return load_settings(**values)

    return _make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """Local-mode settings on the test database."""
    return make_settings()


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for a local-mode app (one app per distinct settings, see `tests.seeding.app_for`)."""
    async with client_for(settings) as test_client:
        yield test_client


@pytest.fixture
async def auth_client(make_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for an app that requires HS256 bearer tokens signed with `SECRET`."""
    async with client_for(make_settings(auth_secret=SECRET)) as test_client:
        yield test_client


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    """The test database, for seeding and inspecting rows directly."""
    database = create_database(settings)
    yield database
    await database.dispose()


def make_token(sub: str, *, secret: str = SECRET, expires_in: int = 3600, **claims: Any) -> str:
    """Mint an HS256 token the way a frontend's auth server would."""
    now = int(time.time())
    payload: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + expires_in, **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, secret, algorithm="HS256")


def bearer(sub: str, **claims: Any) -> dict[str, str]:
    """Authorization headers for user `sub`."""
    return {"Authorization": f"Bearer {make_token(sub, **claims)}"}


# --- the fake Gemini ------------------------------------------------------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakeGemini]:
    """The fake Gemini server (tests/fakes/gemini.py) on a free loopback port."""
    async with FakeGemini() as server:
        yield server


@pytest.fixture
def gemini_settings(make_settings: Callable[..., Settings], fake: FakeGemini) -> Callable[..., Settings]:
    """Build settings that send the model's calls to the fake Gemini; keyword arguments override any field."""

    def _make(**overrides: Any) -> Settings:
        values = {"offline_model": False, "gemini_api_key": "test-key", "gemini_api_base": fake.base_url}
        return make_settings(**{**values, **overrides})

    return _make


# --- a real uvicorn server, for streaming --------------------------------------------------------------------------


@asynccontextmanager
async def serve(app: Litestar, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Run `app` under real uvicorn on a free port of `host` in this event loop; yield its base URL (on 127.0.0.1)."""
    sock = socket.socket()
    sock.bind((host, 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
        sock.close()


@asynccontextmanager
async def live(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A real uvicorn server for an app with these settings, and an HTTP client on it."""
    from backend.app import create_app

    async with serve(create_app(settings)) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
        yield client


@pytest.fixture
def anyio_backend() -> Iterator[str]:
    yield "asyncio"


# --- error bodies ---------------------------------------------------------------------------------------------------


def error_of(response: httpx.Response) -> dict[str, Any]:
    """An error response's body without its `request_id`, once that id is checked against `X-Request-ID`."""
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), body
    inner = dict(body["error"])
    assert inner.pop("request_id", None) == response.headers.get("x-request-id"), (body, response.headers)
    return {**body, "error": inner}
