"""A second event loop, on a thread of its own, for model calls whose request carries attachments.

LiteLLM builds a request on the loop that awaits it: for a message with megabytes of attachments it turns every
file into Gemini's `inline_data`, serialises the whole JSON body and parses each chunk next to that request, which
held the server's event loop for about 100 ms per model call with 10 MiB of files (issue 18). Such calls run here
instead: the request is built, sent and read on this loop, and the chunks come back to the server's loop one at a
time. The server's loop is then held only while a long C call of that work (one `json.dumps` of the body) keeps the
GIL, a few milliseconds, instead of for the whole build.

LiteLLM keys its cached HTTP clients by event loop (`LLMClientCache.update_cache_key_with_event_loop`), so the calls
made here use clients of this loop. The caller's context variables (request id, trace context) are copied into each
call.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import threading
from collections.abc import AsyncIterator, Coroutine
from typing import Any, Protocol, TypeVar

__all__ = ["SideLoop", "SideStream", "side_loop"]

_T = TypeVar("_T")


class SideLoop:
    """An event loop running forever on a daemon thread, started on first use."""

    def __init__(self, name: str = "model-side-loop") -> None:
        """Create it (the thread starts on the first `run`)."""
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                started = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(started.set)
                    loop.run_forever()

                threading.Thread(target=serve, name=self._name, daemon=True).start()
                started.wait()
                self._loop = loop
            return self._loop

    async def run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        """Run `coroutine` on the side loop, in a copy of the caller's context, and await its result here.

        Cancelling the caller cancels the coroutine on the side loop (and waits for it to finish).
        """
        loop = self._running_loop()
        context = contextvars.copy_context()
        done: concurrent.futures.Future[_T] = concurrent.futures.Future()
        tasks: list[asyncio.Task[_T]] = []

        def start() -> None:
            if not done.set_running_or_notify_cancel():
                coroutine.close()
                return
            task = loop.create_task(coroutine, context=context)
            tasks.append(task)
            task.add_done_callback(lambda finished: _settle(done, finished))

        loop.call_soon_threadsafe(start)
        waiting = asyncio.wrap_future(done)
        try:
            return await asyncio.shield(waiting)
        except asyncio.CancelledError:
            if not done.cancel():  # started: cancel it there, and wait until it has stopped
                loop.call_soon_threadsafe(lambda: [task.cancel() for task in tasks])
                with contextlib.suppress(BaseException):  # the caller's cancellation is what propagates
                    await waiting
            raise


def _settle(done: concurrent.futures.Future[_T], task: asyncio.Task[_T]) -> None:
    if task.cancelled():  # a running concurrent future cannot be cancelled any more: it fails with the cancellation
        done.set_exception(asyncio.CancelledError())
    elif (error := task.exception()) is not None:
        done.set_exception(error)
    else:
        done.set_result(task.result())


class _Chunks(Protocol):
    def __anext__(self) -> Coroutine[Any, Any, Any]: ...

    def aclose(self) -> Coroutine[Any, Any, None]: ...


class SideStream:
    """An async iterator living on a side loop, read from another loop one item at a time."""

    __slots__ = ("_inner", "_side")

    def __init__(self, inner: _Chunks, side: SideLoop) -> None:
        """Wrap `inner`, whose `__anext__` and `aclose` must run on `side`."""
        self._inner = inner
        self._side = side

    def __aiter__(self) -> AsyncIterator[Any]:
        """Itself."""
        return self

    async def __anext__(self) -> Any:
        """The next item, read on the side loop."""
        return await self._side.run(self._inner.__anext__())

    async def aclose(self) -> None:
        """Close the inner iterator on the side loop."""
        await self._side.run(self._inner.aclose())


_SHARED = SideLoop()


def side_loop() -> SideLoop:
    """The process's side loop for model calls with attachments."""
    return _SHARED
