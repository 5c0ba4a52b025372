"""Fixtures for the browser tests: system Chromium via Playwright, the real app under uvicorn, the fake Gemini."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from backend.app import create_app
from backend.settings import Settings
from tests.conftest import _migrate, serve
from tests.fakes.gemini import FakeGemini

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

# Playwright must never download a browser; the tests drive the system Chromium only.
os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")


def chromium_path() -> str | None:
    """The system Chromium to drive: $CHROMIUM_PATH, else the first Debian/Ubuntu location that exists."""
    configured = os.environ.get("CHROMIUM_PATH")
    if configured:
        return configured if Path(configured).exists() else None
    for candidate in CHROMIUM_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    return shutil.which("chromium")


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Browser tests run on SQLite only (overrides the sqlite/postgres parametrized fixture of tests/conftest.py)."""
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('browser-db') / 'test.db'}"
    _migrate(url)
    return url


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    """One headless system Chromium per test module; skipped (with the reason) when it is not installed."""
    path = chromium_path()
    if path is None:
        pytest.skip("Chromium is not installed (apt-get install chromium, or set CHROMIUM_PATH)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:  # pragma: no cover - playwright is a dev dependency
        pytest.skip("the playwright package is not installed")
    from playwright.async_api import expect

    expect.set_options(timeout=10_000)  # slow CI machines: assertions wait as long as actions do
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class ChatServer:
    """The app under uvicorn, wired to the fake Gemini. `url` is the page, `fake` scripts the model."""

    url: str
    fake: FakeGemini
    settings: Settings
    pages: list[Any] = field(default_factory=list)


@pytest_asyncio.fixture(loop_scope="module")
async def start_server(make_settings: Callable[..., Settings]) -> AsyncIterator[Callable[..., Any]]:
    """Start the app (real uvicorn, real LiteLLM path) against an in-process fake Gemini; keyword args are settings."""
    async with AsyncExitStack() as stack:

        async def start(**overrides: Any) -> ChatServer:
            fake = await stack.enter_async_context(FakeGemini())
            settings = make_settings(
                offline_model=False,
                gemini_api_key="test-key",
                gemini_api_base=fake.base_url,
                keepalive_seconds=1.0,
                **overrides,
            )
            url = await stack.enter_async_context(serve(create_app(settings)))
            return ChatServer(url=url, fake=fake, settings=settings)

        yield start


@pytest_asyncio.fixture(loop_scope="module")
async def server(start_server: Callable[..., Any]) -> ChatServer:
    """A local-mode server (no AUTH_SECRET)."""
    return await start_server()


@dataclass
class PageProbe:
    """What the page did that a test may want to assert on: JS dialogs and uncaught errors."""

    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest_asyncio.fixture(loop_scope="module")
async def new_page(browser: Any) -> AsyncIterator[Callable[..., Any]]:
    """Open pages in fresh browser contexts (own localStorage); each page records JS dialogs and page errors."""
    contexts = []
    probes: list[PageProbe] = []

    async def open_page(*, width: int = 1200, height: int = 800) -> tuple[Any, PageProbe]:
        context = await browser.new_context(viewport={"width": width, "height": height}, color_scheme="light")
        contexts.append(context)
        page = await context.new_page()
        page.set_default_timeout(10_000)
        probe = PageProbe()
        probes.append(probe)

        async def on_dialog(dialog: Any) -> None:
            probe.dialogs.append(f"{dialog.type}: {dialog.message}")
            await dialog.dismiss()

        page.on("dialog", on_dialog)
        page.on("pageerror", lambda error: probe.errors.append(str(error)))
        return page, probe

    yield open_page
    for context in contexts:
        await context.close()
    for probe in probes:
        assert not probe.errors, f"uncaught errors in the page: {probe.errors}"


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where screenshots go (gitignored)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def sse(*events: dict[str, Any], first_id: int | None = None) -> str:
    """SSE frames of `events` (with `id:` lines counting from `first_id`, when given), then `data: [DONE]`."""
    frames = []
    for i, event in enumerate(events):
        frame_id = "" if first_id is None else f"id: {first_id + i}\n"
        frames.append(f"{frame_id}data: {json.dumps(event)}\n\n")
    return "".join(frames) + "data: [DONE]\n\n"


async def script_chatkit(page: Any, answers: list[str]) -> list[dict[str, Any]]:
    """Answer the page's `POST /chatkit` requests with `answers` in order; returns the request bodies as they come.

    The page's side of the protocol, tested without a model: the bodies show what the page sent.
    """
    bodies: list[dict[str, Any]] = []

    async def answer(route: Any) -> None:
        bodies.append(json.loads(route.request.post_data))
        await route.fulfill(status=200, content_type="text/event-stream", body=answers[len(bodies) - 1])

    await page.route("**/chatkit", answer)
    return bodies
