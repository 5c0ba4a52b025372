"""The event-loop stall watch logs a step that holds the loop, with where it is, and nothing of its data."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from backend.app import create_app
from backend.loopwatch import LoopWatch
from backend.settings import Settings
from tests.conftest import serve


def hold_the_loop_sleeping(seconds: float) -> None:
    secret = "hunter2-message-text"  # a local the log line must never show
    time.sleep(seconds)
    assert secret


def hold_the_loop_busy(seconds: float) -> None:
    deadline = time.thread_time() + seconds
    while time.thread_time() < deadline:
        pass


def _stall_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "backend.loopwatch" and r.levelno == logging.WARNING]


async def _settle(seconds: float = 0.15) -> None:
    await asyncio.sleep(seconds)


@contextlib.asynccontextmanager
async def watching(threshold: float, log_every: float = 0) -> AsyncIterator[LoopWatch]:
    watch = LoopWatch(threshold, interval=0.01, log_every=log_every)
    watch.start()
    try:
        await _settle()
        yield watch
        await _settle()
    finally:
        await watch.stop()


async def test_a_blocking_step_is_logged_with_its_function_and_no_data(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="backend.loopwatch")
    async with watching(0.05) as watch:
        hold_the_loop_sleeping(0.3)
    lines = _stall_lines(caplog)
    assert len(lines) == 1, lines
    line = lines[0]
    assert "hold_the_loop_sleeping" in line and "tests.operations.test_loopwatch" in line, line
    held = float(line.split("held for ")[1].split(" ms")[0])
    assert held >= 250, line
    assert "hunter2" not in line
    # A sleeping step holds the loop without the CPU: the line tells that apart from slow code.
    on_cpu = float(line.split("(")[1].split(" of its last")[0])
    assert on_cpu < 100, line
    stats = watch.stats()
    assert stats.stalls == 1 and stats.max_ms >= 250 and stats.beats > 5


async def test_a_busy_step_shows_its_cpu_time(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="backend.loopwatch")
    async with watching(0.05):
        hold_the_loop_busy(0.3)
    (line,) = _stall_lines(caplog)
    assert "hold_the_loop_busy" in line
    on_cpu = float(line.split("(")[1].split(" of its last")[0])
    # 300 ms of CPU in all, at most the threshold's worth of it before the stall was seen (however busy the machine).
    assert on_cpu >= 150, line


async def test_lines_are_rate_limited_and_count_what_they_left_out(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="backend.loopwatch")
    async with watching(0.05, log_every=1.5) as watch:
        for _ in range(3):
            hold_the_loop_sleeping(0.1)
            await _settle(0.05)
        await _settle(1.5)
        hold_the_loop_sleeping(0.1)
    lines = _stall_lines(caplog)
    assert len(lines) == 2, lines
    assert "0 more stalls" in lines[0] and "2 more stalls" in lines[1], lines
    assert watch.stats().stalls == 4


async def test_short_waits_are_not_stalls(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="backend.loopwatch")
    async with watching(0.2) as watch:
        for _ in range(5):
            hold_the_loop_sleeping(0.02)
            await _settle(0.02)
    assert _stall_lines(caplog) == []
    assert watch.stats().stalls == 0


@pytest.mark.parametrize(("stall_ms", "watching"), [(100.0, True), (0.0, False)])
async def test_the_app_watches_its_loop_unless_switched_off(
    make_settings: Callable[..., Settings], stall_ms: float, watching: bool
) -> None:
    app = create_app(make_settings(loop_stall_ms=stall_ms))
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
        assert (await client.get("/health")).status_code == 200
        watch = app.state.loop_watch
        assert (watch is not None) is watching
        if watch is not None:
            await _settle(0.2)
            assert watch.stats().beats > 0
