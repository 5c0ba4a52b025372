"""Event-loop stall watch: log any step that holds the event loop too long, and where it was.

Every coroutine of a worker shares one event loop, so a synchronous step that runs for 200 ms delays every stream
of that worker by 200 ms. A stall is invisible in request logs; this makes it visible:

* a task on the loop beats every `interval` seconds and measures how late it woke (the loop's lag);
* a daemon thread looks at the beat; once the loop has been silent for `threshold` seconds it records the loop
  thread's Python stack at that moment (the step holding the loop) and that thread's CPU clock;
* when the loop comes back, one WARNING line says how long it was held, how much of that the loop thread spent on
  the CPU (a stall with little CPU is a machine short of cores, not slow code), and the innermost frames
  (module, function and line only: never arguments, locals or message contents).

Lines are rate-limited (one per `log_every` seconds, with a count of the stalls not logged in between); the lag since
start is on `app.state.loop_watch.stats()`. Costs: one timer on the loop and one thread wake-up per interval (20
each per second at the default 50 ms).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from dataclasses import dataclass
from types import FrameType

log = logging.getLogger(__name__)

STACK_FRAMES = 6
"""How many of the innermost frames a stall line shows."""


@dataclass(frozen=True, slots=True)
class LagStats:
    """Event-loop lag since start: beats measured, the worst one, and stalls over the threshold."""

    beats: int
    max_ms: float
    stalls: int


def _where(frame: FrameType | None) -> str:
    """The innermost frames as `module.function:line`, innermost first."""
    parts: list[str] = []
    while frame is not None and len(parts) < STACK_FRAMES:
        code = frame.f_code
        module = frame.f_globals.get("__name__", "?")
        parts.append(f"{module}.{code.co_name}:{frame.f_lineno}")
        frame = frame.f_back
    return " < ".join(parts) or "?"


def _thread_cpu(thread_id: int) -> float | None:
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(thread_id))
    except (AttributeError, OSError):  # not on this platform, or the thread is gone
        return None


class LoopWatch:
    """Watch one event loop (start it from that loop; stop it before the loop closes)."""

    def __init__(self, threshold: float, *, interval: float = 0.05, log_every: float = 10.0) -> None:
        """Configure the watch.

        Args:
            threshold: A loop silent for longer than this (seconds) is a stall, and is logged.
            interval: How often the loop beats and the thread looks (seconds); at most `threshold`.
            log_every: At most one stall line per this many seconds.
        """
        self.threshold = threshold
        self.interval = min(interval, threshold)
        self.log_every = log_every
        self._beat = time.monotonic()
        self._beats = 0
        self._max_lag = 0.0
        self._stalls = 0
        self._unlogged = 0
        self._last_log = 0.0
        self._seen: tuple[str, float, float | None] | None = None  # the stall's stack, when and the loop's CPU then
        self._loop_thread = 0
        self._stop = threading.Event()
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Begin watching the running loop."""
        self._loop_thread = threading.get_ident()
        self._beat = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._beating(), name="loop-watch")
        self._thread = threading.Thread(target=self._watching, name="loop-watch", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Stop the task and the thread."""
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 1.0)

    def stats(self) -> LagStats:
        """Lag since start."""
        return LagStats(beats=self._beats, max_ms=round(self._max_lag * 1000, 1), stalls=self._stalls)

    async def _beating(self) -> None:
        while True:
            before = time.monotonic()
            self._beat = before
            await asyncio.sleep(self.interval)
            now = time.monotonic()
            self._beat = now
            lag = now - before - self.interval
            seen, self._seen = self._seen, None
            self._beats += 1
            self._max_lag = max(self._max_lag, lag)
            if lag > self.threshold:
                self._stalled(lag, now, seen)

    def _stalled(self, lag: float, now: float, seen: tuple[str, float, float | None] | None) -> None:
        self._stalls += 1
        if now - self._last_log < self.log_every:
            self._unlogged += 1
            return
        self._last_log = now
        where, cpu = "not sampled (shorter than a look)", "CPU time unknown"
        if seen is not None:
            where, seen_at, cpu_then = seen
            cpu_now = _thread_cpu(self._loop_thread)
            if cpu_then is not None and cpu_now is not None:
                cpu = f"{(cpu_now - cpu_then) * 1000:.0f} of its last {(now - seen_at) * 1000:.0f} ms on the CPU"
        unlogged, self._unlogged = self._unlogged, 0
        log.warning(
            "event loop held for %.0f ms (%s; %d more stalls since the last line); holding it: %s",
            lag * 1000,
            cpu,
            unlogged,
            where,
        )

    def _watching(self) -> None:
        while not self._stop.wait(self.interval):
            beat = self._beat
            if self._seen is None and time.monotonic() - beat > self.threshold:
                # sys._current_frames: CPython's documented way to see another thread's stack.
                frame = sys._current_frames().get(self._loop_thread)
                cpu = _thread_cpu(self._loop_thread)
                if self._beat == beat:  # still the same stall: record where the loop is
                    self._seen = (_where(frame), time.monotonic(), cpu)
                del frame
