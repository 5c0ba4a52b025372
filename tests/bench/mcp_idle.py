"""What one idle external MCP server costs per chat turn, and what a shared HTTP server object costs under concurrency.

    .venv/bin/python -m tests.bench.mcp_idle [--turns 100]

Part 1 runs the same offline-model turns ("list my tasks": a tool call, then a short reply) against the app under real
uvicorn on a temporary SQLite database, with no MCP server and with one configured stdio server (the test fake), and
reports wall time and CPU per turn (this process, which holds both the server and the client) plus the MCP child's
CPU over the same window. Part 2 calls a 0.3 s tool 5 times concurrently on one shared server object, over stdio and
over streamable HTTP. Nothing asserts on timing; the numbers go to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from alembic import command
from backend.app import create_app
from backend.db import alembic_config
from backend.mcp.client import McpServers
from backend.mcp_config import parse_mcp_servers
from backend.settings import PROJECT_ROOT, load_settings
from tests.conftest import serve
from tests.fakes.mcp_tools import CountingApp
from tests.sse import chat

STDIO = {"name": "fake", "command": sys.executable, "args": ["-m", "tests.fakes.mcp_tools"], "cwd": str(PROJECT_ROOT)}
TICKS = os.sysconf("SC_CLK_TCK")


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _children_cpu() -> float:
    """CPU seconds (user+system) of this process's live children, from /proc."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():
            total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


async def _turns(database_url: str, servers: list[dict[str, object]], turns: int) -> dict[str, float]:
    settings = load_settings(
        database_url=database_url,
        offline_model=True,
        auth_secret=None,
        log_level="WARNING",
        mcp_servers=json.dumps(servers),
        mcp_health_seconds=600,
    )
    async with serve(create_app(settings)) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
        await chat(client, {"message": "list my tasks"})  # warm-up
        walls: list[float] = []
        cpu0, child0 = time.process_time(), _children_cpu()
        for _ in range(turns):
            start = time.perf_counter()
            stream = await chat(client, {"message": "list my tasks"})
            walls.append(time.perf_counter() - start)
            assert stream.of("done")[0]["finish_reason"] == "stop"
        cpu, child = time.process_time() - cpu0, _children_cpu() - child0
    return {
        "wall_ms_median": statistics.median(walls) * 1000,
        "wall_ms_mean": statistics.fmean(walls) * 1000,
        "cpu_ms_per_turn": cpu / turns * 1000,
        "mcp_child_cpu_ms_per_turn": child / turns * 1000,
    }


async def _concurrency(http_url: str) -> dict[str, float]:
    results: dict[str, float] = {}
    configs = [STDIO, {"name": "remote", "url": http_url}]
    for config in configs:
        servers = McpServers(parse_mcp_servers([config]), health_seconds=600)
        await servers.start(connect_timeout=20)
        server = servers.servers[0]
        start = time.perf_counter()
        await asyncio.gather(*(server.call_tool("nap", {"seconds": 0.3}) for _ in range(5)))
        results[f"5 x 0.3 s calls, shared {type(server).__name__}"] = time.perf_counter() - start
        await servers.stop()
    return results


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=100)
    options = parser.parse_args()
    database_url = f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/bench.db"
    await asyncio.to_thread(command.upgrade, alembic_config(url=database_url), "head")
    rows = {}
    for round_ in range(2):  # alternate, so drift affects both sides alike
        rows[f"no MCP server (round {round_ + 1})"] = await _turns(database_url, [], options.turns)
        rows[f"one idle stdio server (round {round_ + 1})"] = await _turns(database_url, [STDIO], options.turns)
    _out(f"{options.turns} offline-model turns each (tool call + reply), median/mean wall, CPU per turn:")
    for name, row in rows.items():
        _out(f"  {name:38} " + "  ".join(f"{k}={v:.2f}" for k, v in row.items()))
    counting = CountingApp()
    async with serve(counting) as base:  # type: ignore[arg-type]
        for name, seconds in (await _concurrency(f"{base}/mcp")).items():
            _out(f"  {name:60} {seconds:.2f} s")


if __name__ == "__main__":
    asyncio.run(main())
