"""Summarise a py-spy ``--format raw --full-filenames --threads`` profile: where the server's CPU goes.

``python -m tests.bench.profile_summary PROFILE.txt [--top 30]`` prints (and `summarise` returns) markdown with:

* samples per thread;
* CPU by component: each sample goes to the innermost frame that belongs to a known component (LiteLLM, Agents
  SDK, our code, sse-starlette, Litestar, uvicorn, SQLAlchemy, psycopg, pydantic, openai types, aiohttp/httpx,
  logging, asyncio/uvloop, ...), so e.g. pydantic work done for LiteLLM counts as pydantic;
* CPU by *owner*: each sample goes to the outermost library frame below the event loop (who asked for the work);
* the top functions by self time and by inclusive time.

The harness never requires py-spy; this only reads a file py-spy wrote.
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# (component, path fragment). Order matters: the first match wins.
COMPONENTS: list[tuple[str, str]] = [
    ("our code (backend/)", "/work/main/backend/"),
    ("litellm logging/callbacks", "litellm/litellm_core_utils/litellm_logging"),
    ("litellm logging/callbacks", "litellm/integrations/"),
    ("litellm cost calculation", "litellm/cost_calculator"),
    ("litellm streaming (CustomStreamWrapper)", "litellm/litellm_core_utils/streaming_handler"),
    ("litellm streaming (CustomStreamWrapper)", "litellm/litellm_core_utils/streaming_chunk_builder"),
    ("litellm gemini transformation", "litellm/llms/vertex_ai/"),
    ("litellm gemini transformation", "litellm/llms/gemini/"),
    ("litellm http (httpx/aiohttp handler)", "litellm/llms/custom_httpx/"),
    ("litellm other", "/litellm/"),
    ("agents SDK", "/agents/"),
    ("openai types", "/openai/"),
    ("sse-starlette", "/sse_starlette/"),
    ("litestar", "/litestar/"),
    ("starlette", "/starlette/"),
    ("uvicorn", "/uvicorn/"),
    ("sqlalchemy/sqlmodel", "/sqlalchemy/"),
    ("sqlalchemy/sqlmodel", "/sqlmodel/"),
    ("psycopg", "/psycopg"),
    ("pydantic", "/pydantic"),
    ("aiohttp", "/aiohttp/"),
    ("httpx/httpcore", "/httpx/"),
    ("httpx/httpcore", "/httpcore/"),
    ("anyio", "/anyio/"),
    ("msgspec", "/msgspec/"),
    ("logging (stdlib)", "/logging/"),
    ("json (stdlib)", "/json/"),
    ("asyncio/uvloop", "/asyncio/"),
    ("asyncio/uvloop", "/uvloop/"),
    ("threading/concurrent (stdlib)", "/threading.py"),
    ("threading/concurrent (stdlib)", "/concurrent/"),
    ("copy (stdlib)", "/copy.py"),
]

# (subsystem, path fragments): a sample belongs to the first subsystem any of whose fragments appears anywhere in
# its stack, so the pydantic, httpx and thread work LiteLLM causes is LiteLLM's, and a tool's queries are the DB's.
SUBSYSTEMS: list[tuple[str, tuple[str, ...]]] = [
    ("LiteLLM (all it calls: pydantic, httpx/aiohttp, its threads)", ("/litellm/",)),
    ("database (SQLAlchemy/SQLModel + psycopg)", ("/sqlalchemy/", "/sqlmodel/", "/psycopg")),
    ("Agents SDK (run loop, events, tool calls)", ("/agents/",)),
    ("sse-starlette (EventSourceResponse)", ("/sse_starlette/",)),
    ("Litestar (routing, DI, validation, middleware)", ("/litestar/",)),
    ("uvicorn (HTTP/1.1 protocol)", ("/uvicorn/protocols/",)),
    ("our code (backend/), outside the above", ("/work/main/backend/",)),
    ("aiohttp (outside LiteLLM)", ("/aiohttp/",)),
    ("logging", ("/logging/",)),
]

# Frames that only drive the loop; the "owner" is the first frame after them.
_DRIVERS = (
    "/asyncio/",
    "/uvloop/",
    "<frozen runpy>",
    "/threading.py",
    "/concurrent/",
    "/runpy.py",
    "backend/__main__.py",
    "/uvicorn/main.py",
    "/uvicorn/server.py",
    "/uvicorn/_compat.py",
    "tests/bench/server.py",
)


# Leaf frames that are a thread blocked waiting (py-spy --nonblocking cannot always tell them from running code).
_IDLE_LEAVES = {
    ("Condition.wait", "threading.py"),
    ("Event.wait", "threading.py"),
    ("_worker", "thread.py"),
    ("Queue.get", "queue.py"),
    ("EpollSelector.select", "selectors.py"),
    ("Thread._wait_for_tstate_lock", "threading.py"),
}


def _idle(frames: list[tuple[str, str]]) -> bool:
    if not frames:
        return False
    func, file = frames[-1]
    return any(func == f and file.endswith(suffix) for f, suffix in _IDLE_LEAVES)


def component(path: str) -> str | None:
    """The component a source path belongs to, or None."""
    for name, fragment in COMPONENTS:
        if fragment in path:
            return name
    return None


def _parse(line: str) -> tuple[list[tuple[str, str]], int] | None:
    stack, _, count = line.rstrip("\n").rpartition(" ")
    if not stack or not count.isdigit():
        return None
    frames = []
    for raw in stack.split(";"):
        m = _FRAME.match(raw)
        frames.append((m["func"], m["file"]) if m else (raw, ""))
    return frames, int(count)


def _short(path: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def summarise(path: Path, top: int = 25) -> tuple[str, dict[str, object]]:
    """Markdown and a JSON-able dict for the profile at `path`."""
    threads: collections.Counter[str] = collections.Counter()
    by_component: collections.Counter[str] = collections.Counter()
    by_subsystem: collections.Counter[str] = collections.Counter()
    by_owner: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = idle = 0
    for line in path.read_text().splitlines():
        parsed = _parse(line)
        if parsed is None:
            continue
        frames, count = parsed
        if _idle(frames):
            idle += count
            continue
        total += count
        thread = frames[0][0] if frames and frames[0][0].startswith("thread") else "?"
        threads[re.sub(r"\(\d+\)", "", thread).strip()] += count
        frames = [f for f in frames if not f[0].startswith(("thread ", "process "))]
        files = [file for _, file in frames]
        subsystem = next(
            (name for name, frags in SUBSYSTEMS if any(f in p for p in files for f in frags)),
            "event loop and the rest (uvloop C code, asyncio, anyio)",
        )
        by_subsystem[subsystem] += count
        comp = next((c for _, file in reversed(frames) if (c := component(file))), "other")
        by_component[comp] += count
        owner_frame = next((f for f in frames if f[1] and not any(d in f[1] for d in _DRIVERS)), None)
        if owner_frame is None:
            by_owner["event loop itself (uvloop's C code: socket I/O, callbacks)"] += count
        else:
            by_owner[f"{component(owner_frame[1]) or 'other'}: {owner_frame[0]}"] += count
        if frames:
            func, file = frames[-1]
            self_time[f"{func} ({_short(file)})"] += count
        for func, file in {(f, _short(p)) for f, p in frames}:
            inclusive[f"{func} ({file})"] += count

    def pct(n: int) -> str:
        return f"{100 * n / total:.1f}%" if total else "-"

    lines = [
        f"Samples: {total} on CPU ({idle} more were threads blocked waiting, left out)",
        "",
        "| thread | samples | share |",
        "|---|---:|---:|",
    ]
    lines += [f"| {k} | {v} | {pct(v)} |" for k, v in threads.most_common(8)]
    lines += [
        "",
        "**CPU by subsystem** (first match anywhere in the stack, in this order)",
        "",
        "| subsystem | share |",
        "|---|---:|",
    ]
    lines += [f"| {k} | {pct(v)} |" for k, v in by_subsystem.most_common()]
    lines += ["", "**CPU by component** (innermost known frame)", "", "| component | share |", "|---|---:|"]
    lines += [f"| {k} | {pct(v)} |" for k, v in by_component.most_common()]
    lines += ["", "**CPU by owner** (outermost frame under the event loop)", "", "| owner | share |", "|---|---:|"]
    lines += [f"| {k} | {pct(v)} |" for k, v in by_owner.most_common(15)]
    lines += ["", f"**Top {top} by self time**", "", "| function | self |", "|---|---:|"]
    lines += [f"| `{k}` | {pct(v)} |" for k, v in self_time.most_common(top)]
    lines += ["", f"**Top {top} by inclusive time**", "", "| function | inclusive |", "|---|---:|"]
    lines += [f"| `{k}` | {pct(v)} |" for k, v in inclusive.most_common(top)]
    data = {
        "samples": total,
        "idle_samples": idle,
        "threads": dict(threads),
        "by_subsystem": {k: v / total for k, v in by_subsystem.most_common()} if total else {},
        "by_component": {k: v / total for k, v in by_component.most_common()} if total else {},
        "by_owner": {k: v / total for k, v in by_owner.most_common(30)} if total else {},
        "self": {k: v / total for k, v in self_time.most_common(top)} if total else {},
        "inclusive": {k: v / total for k, v in inclusive.most_common(top)} if total else {},
    }
    return "\n".join(lines), data


def main() -> None:
    """Print the summary of one profile."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.profile_summary")
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    print(summarise(args.profile, args.top)[0])  # noqa: T201


if __name__ == "__main__":
    main()
