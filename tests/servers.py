"""Real server processes (`python -m backend`) for tests that kill, restart or run several of them."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import IO

import httpx

from backend.settings import PROJECT_ROOT

START_TIMEOUT_SECONDS = 120  # a cold interpreter importing LiteLLM on a loaded 2-core machine is slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class ServerProcess:
    """A running `python -m backend` and its base URL."""

    process: subprocess.Popen[bytes]
    base_url: str

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, exactly like a crashed worker."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)


def server_env(database_url: str, gemini_base: str, **extra: str) -> dict[str, str]:
    """The environment of a server process on this database and fake Gemini (local mode, loopback)."""
    secrets = {"AUTH_SECRET", "BETTER_AUTH_SECRET", "JWT_SECRET"}
    return {
        **{k: v for k, v in os.environ.items() if k not in secrets},
        "DATABASE_URL": database_url,
        "HOST": "127.0.0.1",
        "GEMINI_API_KEY": "test-key",
        "GEMINI_API_BASE": gemini_base,
        "OFFLINE_MODEL": "false",
        "MIGRATE_ON_STARTUP": "false",
        "LOG_LEVEL": "WARNING",
        **extra,
    }


@asynccontextmanager
async def server_process(
    env: dict[str, str], stderr: IO[bytes] | None = None, start_timeout: float = START_TIMEOUT_SECONDS
) -> AsyncIterator[ServerProcess]:
    """Start a server process, wait until it answers `/health`, and stop it (SIGKILL if need be) afterwards.

    Its log lines go to `stderr` (a file opened for writing), or to this process's stderr.
    """
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "backend"],
        env={**env, "PORT": str(port)},
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    server = ServerProcess(process, f"http://127.0.0.1:{port}")
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=5) as client:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + start_timeout
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"the server exited with {process.returncode}")
                try:
                    if (await client.get("/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if loop.time() > deadline:
                    raise TimeoutError("the server did not start")
                await asyncio.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@dataclass
class Pair:
    """Two server processes on one database, with a client for each."""

    one: ServerProcess
    two: ServerProcess
    a: httpx.AsyncClient
    b: httpx.AsyncClient


@asynccontextmanager
async def two_servers(env: dict[str, str]) -> AsyncIterator[Pair]:
    """Start two server processes with the same environment, and an HTTP client on each."""
    async with (
        server_process(env) as one,
        server_process(env) as two,
        httpx.AsyncClient(base_url=one.base_url, timeout=30) as a,
        httpx.AsyncClient(base_url=two.base_url, timeout=30) as b,
    ):
        yield Pair(one, two, a, b)
