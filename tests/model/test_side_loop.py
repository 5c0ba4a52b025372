"""The side loop that model calls with attachments run on: results, errors, context, cancellation, streams."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import AsyncIterator

import pytest

from backend.chat.side_loop import SideLoop, SideStream

REQUEST = contextvars.ContextVar("REQUEST", default="none")


async def test_a_coroutine_runs_on_the_side_thread_in_the_callers_context():
    side = SideLoop("test-side-loop")
    REQUEST.set("req-1")

    async def where() -> tuple[str, str]:
        return threading.current_thread().name, REQUEST.get()

    assert await side.run(where()) == ("test-side-loop", "req-1")


async def test_an_error_there_is_raised_here():
    side = SideLoop()

    async def fail() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await side.run(fail())


async def test_cancelling_the_caller_cancels_the_work_there_and_waits_for_it():
    side = SideLoop()
    started, stopped = threading.Event(), threading.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            stopped.set()

    caller = asyncio.ensure_future(side.run(forever()))
    await asyncio.to_thread(started.wait, 10)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert stopped.is_set(), "the caller returned before the side task had stopped"


async def test_a_stream_is_read_and_closed_on_the_side_loop():
    side = SideLoop("test-side-stream")
    threads: list[str] = []
    closed = threading.Event()

    async def chunks() -> AsyncIterator[int]:
        try:
            for i in range(5):
                threads.append(threading.current_thread().name)
                yield i
        finally:
            closed.set()

    async def make() -> AsyncIterator[int]:
        return chunks()

    inner = await side.run(make())
    stream = SideStream(inner, side)
    read = []
    async for value in stream:
        read.append(value)
        if value == 2:
            break
    await stream.aclose()
    assert read == [0, 1, 2]
    assert set(threads) == {"test-side-stream"}
    assert closed.is_set()
