"""Give back the memory of a turn's large model input (attachments) as soon as the turn ends.

A turn with attachments holds several copies of them at once: their bytes, our base64 `data:` URLs in the model
input, LiteLLM's Gemini request (the base64 again, then the JSON body). The Agents SDK's run result and LiteLLM's
stream and logging objects sit in reference cycles, so when the turn ends these copies are not freed by reference
counting but only by the garbage collector's next full pass, which after `gc.freeze()` can be a long time coming:
three 100 MiB messages once left 2.7 GB resident. So a turn whose input carried attachments asks for one collection
shortly after it ends. The startup heap is frozen (see `backend.app`), so a full collection walks only what
requests created since: a few milliseconds to a few tens (measured 4 to 37 ms while freeing three 10 MiB turns).
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import gc
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

COLLECT_DELAY_SECONDS = 0.5
"""Turns that end close together share one collection; the turn's task has let go of everything by then."""

_scheduled: set[asyncio.AbstractEventLoop] = set()


def collect_soon() -> None:
    """Run one full garbage collection shortly, unless one is already scheduled on this loop."""
    loop = asyncio.get_running_loop()
    if loop in _scheduled:
        return
    _scheduled.add(loop)
    loop.call_later(COLLECT_DELAY_SECONDS, _collect, loop)


def _collect(loop: asyncio.AbstractEventLoop) -> None:
    _scheduled.discard(loop)
    found = gc.collect()
    log.debug("collected %d objects after a turn with attachments", found)
    trim = _libc_malloc_trim()
    if trim is not None:  # off the loop: it walks the allocator's arenas, without the GIL
        loop.run_in_executor(None, trim, 0)


@functools.cache
def _libc_malloc_trim() -> Callable[[int], int] | None:
    """The C library's `malloc_trim` (glibc), or None elsewhere; looked up on first use, not at import.

    The freed copies of a turn's attachments were allocated by two threads (the server's loop and the side loop of
    `backend.chat.side_loop`); glibc keeps what a thread's arena freed unless asked to give it back.
    """
    try:
        libc = ctypes.CDLL(None)  # the symbols the process already has (the C library among them): no `ldconfig` run
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return trim
