"""Event-loop lag inside a server process, and what holds the loop when it stalls (bench launchers only).

`install(app_startup_hooks)` is called by a bench launcher in each worker when ``BENCH_LAG_DIR`` is set:

* a **lag sampler** task sleeps `INTERVAL` seconds in a loop and records how late it woke up (the event-loop lag a
  ready callback would have seen), as ``(monotonic time, lag seconds)`` pairs appended once a second to
  ``<dir>/lag-<pid>.bin`` (doubles), so the orchestrator can take the quantiles over its own measured window;
* a **stall sampler** thread (``BENCH_STALLS=1``): while the sampler task has not run for more than
  `STALL_AFTER` seconds, it takes the event-loop thread's Python stack every `STALL_EVERY` seconds and adds the
  loop thread's CPU time since the previous sample to that stack, into ``<dir>/stalls-<pid>.json``. That names the
  code that holds the loop (it works under uvloop, where ``loop.slow_callback_duration`` and ``Handle._run``
  wrappers do not), and tells a loop busy in our code from one waiting for a core on a loaded machine. It costs a
  GIL hand-off per stall sample, so it is off for the figures and on for diagnosis.

Every garbage-collector pause is recorded too (``gc.callbacks``), into ``<dir>/gc-<pid>.bin``.

CLOCK_MONOTONIC is shared by every process on Linux, so times compare directly with the orchestrator's.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import sys
import threading
import time
from array import array
from collections import Counter
from pathlib import Path

INTERVAL = 0.01
STALL_AFTER = 0.015
STALL_EVERY = 0.002
STACK_DEPTH = 14

_state: dict[str, float] = {"beat": 0.0}


def _frame_label(code_file: str, name: str, line: int) -> str:
    marker = "site-packages/"
    cut = code_file.find(marker)
    short = code_file[cut + len(marker) :] if cut >= 0 else code_file.rsplit("/work/", 1)[-1]
    return f"{short}:{line} {name}"


def _stack(thread_id: int) -> tuple[str, ...]:
    frame = sys._current_frames().get(thread_id)
    out: list[str] = []
    while frame is not None and len(out) < STACK_DEPTH:
        out.append(_frame_label(frame.f_code.co_filename, frame.f_code.co_name, frame.f_lineno))
        frame = frame.f_back
    return tuple(out)


def _stall_thread(loop_thread: int, path: Path, stop: threading.Event) -> None:
    # Each stack is weighted by the CPU time the loop thread spent since the previous sample (its own CPU clock), so
    # a loop that was merely waiting for a core on a busy machine does not pass for one doing work.
    clock = time.pthread_getcpuclockid(loop_thread)
    stacks: Counter[tuple[str, ...]] = Counter()
    stalls = 0
    stall_wall = stall_cpu = 0.0
    stalled_since = 0.0
    last_write = last_sample = time.monotonic()
    last_cpu = time.clock_gettime(clock)
    while not stop.wait(STALL_EVERY):
        now, cpu = time.monotonic(), time.clock_gettime(clock)
        late = now - _state["beat"] - INTERVAL
        if late > STALL_AFTER:
            if not stalled_since:
                stalled_since, stalls = now, stalls + 1
            else:
                stall_wall += now - last_sample
                stall_cpu += cpu - last_cpu
                stacks[_stack(loop_thread)] += cpu - last_cpu
        else:
            stalled_since = 0.0
        last_sample, last_cpu = now, cpu
        if now - last_write > 2.0:
            last_write = now
            top = [{"cpu_ms": round(v * 1e3, 2), "stack": list(k)} for k, v in stacks.most_common(80)]
            summary = {"stalls": stalls, "stall_wall_s": stall_wall, "stall_loop_cpu_s": stall_cpu, "top": top}
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(summary))
            tmp.replace(path)


_gc: dict[str, float] = {"start": 0.0}
_gc_pauses: array[float] = array("d")  # (monotonic end, generation, seconds) triples


def _on_gc(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _gc["start"] = time.perf_counter()
    else:
        _gc_pauses.extend((time.monotonic(), info["generation"], time.perf_counter() - _gc["start"]))


async def _lag_task(path: Path) -> None:
    buf = array("d")
    gc_path = path.with_name(path.name.replace("lag-", "gc-"))
    loop = asyncio.get_running_loop()
    last_flush = loop.time()
    with path.open("ab") as out:
        while True:
            before = time.monotonic()
            _state["beat"] = before
            await asyncio.sleep(INTERVAL)
            after = time.monotonic()
            _state["beat"] = after
            buf.append(after)
            buf.append(max(0.0, after - before - INTERVAL))
            if after - last_flush >= 1.0:
                last_flush = after
                buf.tofile(out)
                out.flush()
                del buf[:]
                with gc_path.open("ab") as gc_out:
                    _gc_pauses.tofile(gc_out)
                del _gc_pauses[:]


def start() -> None:
    """Start the samplers in the running loop (call from an app start-up hook); no-op without ``BENCH_LAG_DIR``."""
    folder = os.environ.get("BENCH_LAG_DIR")
    if not folder:
        return
    pid = os.getpid()
    gc.callbacks.append(_on_gc)
    task = asyncio.get_running_loop().create_task(_lag_task(Path(folder) / f"lag-{pid}.bin"))
    _tasks.add(task)
    if os.environ.get("BENCH_STALLS"):
        stop = threading.Event()
        thread = threading.Thread(
            target=_stall_thread,
            args=(threading.get_ident(), Path(folder) / f"stalls-{pid}.json", stop),
            name="bench-stalls",
            daemon=True,
        )
        thread.start()


_tasks: set[asyncio.Task[None]] = set()


def read(folder: Path, t0: float, t1: float) -> list[float]:
    """Every lag sample (seconds) any process wrote into `folder` for wake-ups inside ``[t0, t1)``."""
    lags: list[float] = []
    for path in folder.glob("lag-*.bin"):
        data = array("d")
        with contextlib.suppress(OSError, EOFError, ValueError):
            raw = path.read_bytes()
            data.frombytes(raw[: len(raw) - len(raw) % 16])
        lags += [data[i + 1] for i in range(0, len(data), 2) if t0 <= data[i] < t1]
    return lags


def read_gc(folder: Path, t0: float, t1: float) -> dict[int, tuple[int, float, float]]:
    """Garbage-collector pauses inside ``[t0, t1)`` by generation: (count, total seconds, longest seconds)."""
    out: dict[int, tuple[int, float, float]] = {}
    for path in folder.glob("gc-*.bin"):
        data = array("d")
        with contextlib.suppress(OSError, EOFError, ValueError):
            raw = path.read_bytes()
            data.frombytes(raw[: len(raw) - len(raw) % 24])
        for i in range(0, len(data), 3):
            if t0 <= data[i] < t1:
                n, total, longest = out.get(int(data[i + 1]), (0, 0.0, 0.0))
                out[int(data[i + 1])] = (n + 1, total + data[i + 2], max(longest, data[i + 2]))
    return out


def read_stalls(folder: Path) -> list[dict[str, object]]:
    """The stall samplers' summaries in `folder` (one per process)."""
    out = []
    for path in folder.glob("stalls-*.json"):
        with contextlib.suppress(OSError, ValueError):
            out.append(json.loads(path.read_text()))
    return out
