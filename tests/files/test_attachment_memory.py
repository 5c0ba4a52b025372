"""Issue 18 §1: one user sending the worst allowed message several times at once holds a bounded amount of memory.

A real server process (`python -m backend` under uvicorn) on SQLite, with the fake Gemini; its memory is read from
/proc. The defaults are what is measured: `MESSAGE_ATTACHMENT_BYTES` (M = 10 MiB), `FILES_PER_MESSAGE_MAX` (10) and
`MAX_TURNS_PER_USER` (T = 3).

The bound. While a turn's model request is built and sent, its attachments exist as: their bytes (1 M), our base64
`data:` URLs in the run input (4/3 M), LiteLLM's Gemini `inline_data` strings (4/3 M), the JSON body LiteLLM
serialises (4/3 M) and the bytes httpx sends (4/3 M), plus transient copies while each is built (about one more of
each): about 11 M at the peak, rounded up to 12 M. T turns may run at once, so the peak RSS may exceed the idle RSS
by at most T x 12 M (360 MiB) plus 128 MiB for the allocator's slack and the requests themselves. Measured on the
development machine (2026-12-07): +196 to +212 MiB at the peak for three turns, and before the fix, with no cap and
no limit, three messages of ten 10 MiB files took +1.9 GB and kept +1.65 GB.

After the turns end their copies are freed (see `backend.memory`): RSS must come back within 150 MiB of idle
(measured +35 to +70 MiB; before the fix +175 MiB for the same three 10 MiB turns, and gigabytes for bigger ones).

The stall watch's lines (`LOOP_STALL_MS=100`) are logged with the figures, not asserted: a stall is a duration, and
these machines are shared. That the attachments' model calls run off the server's loop is asserted without timing in
`tests/model/test_side_loop.py` (before the side loop: about 100 ms per model call on the server's loop).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path

import httpx
import pytest

from alembic import command
from backend.db import alembic_config
from backend.settings import Settings
from tests.fakes.gemini import FakeGemini, text_turn
from tests.files.test_attachment_limits import png_of
from tests.servers import server_env, server_process
from tests.sse import chat

pytestmark = pytest.mark.timeout(300)

MIB = 1024 * 1024
DEFAULTS = Settings.model_fields
M = DEFAULTS["message_attachment_bytes"].default
FILES = DEFAULTS["files_per_message_max"].default
TURNS = DEFAULTS["max_turns_per_user"].default
PEAK_BOUND = TURNS * 12 * M + 128 * MIB
SETTLED_BOUND = 150 * MIB
STALL_LINE = re.compile(r"event loop held for (\d+) ms .*holding it: (.*)$")


def rss(pid: int, field: str = "VmRSS") -> int:
    """A memory figure of the process from /proc/<pid>/status, in bytes (VmRSS now, VmHWM the peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def stalls(log: Path, since: int) -> list[tuple[int, str]]:
    lines = log.read_bytes()[since:].decode(errors="replace").splitlines()
    return [(int(m[1]), m[2]) for line in lines if (m := STALL_LINE.search(line))]


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
async def test_the_worst_allowed_message_sent_many_times_at_once_holds_bounded_memory(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'memory.db'}"
    await asyncio.to_thread(command.upgrade, alembic_config(url=url), "head")
    log = tmp_path / "server.log"
    async with FakeGemini() as fake:
        fake.default_turn = text_turn(["word "] * 20, delay=0.05)  # the turns overlap
        env = server_env(url, fake.base_url, FILE_STORAGE_DIR=str(tmp_path / "files"), LOOP_STALL_MS="100")
        with log.open("wb") as sink:
            async with (
                server_process(env, stderr=sink) as server,
                httpx.AsyncClient(base_url=server.base_url, timeout=120) as client,
            ):
                pid = server.process.pid

                async def upload(data: bytes) -> str:
                    response = await client.post("/api/files", files={"file": ("f.png", data, "image/png")})
                    assert response.status_code == 201, response.text
                    return str(response.json()["id"])

                # The attack of the issue (ten 10 MiB files on one message) is refused before anything is read.
                big = await upload(png_of(DEFAULTS["file_max_bytes"].default))
                small = await upload(png_of(M // FILES - 1))
                refused = await chat(client, {"message": "hi", "attachments": [big, small]})
                assert refused.status == 413 and refused.body["error"]["code"] == "attachments_too_large"

                worst = [await upload(png_of(M // FILES, seed)) for seed in range(FILES)]
                body = {"message": "describe these", "attachments": worst}
                warm = await chat(client, body)  # LiteLLM's lazy imports and caches belong to the idle figure
                assert warm.status == 200 and warm.types[-1] == "done", warm.body
                await settle(pid)
                await quiet_for_a_log_interval(log)
                idle, since = rss(pid), log.stat().st_size
                reset_peak(pid)

                streams = await asyncio.gather(*(chat(client, body) for _ in range(2 * TURNS)))

                peak = rss(pid, "VmHWM")
                settled = await settle(pid, target=idle + SETTLED_BOUND)
                seen = stalls(log, since)

    statuses = sorted(stream.status for stream in streams)
    assert statuses == [200] * TURNS + [429] * TURNS, statuses
    for stream in streams:
        if stream.status == 200:
            assert stream.types[-1] == "done" and stream.events[-1]["finish_reason"] == "stop", stream.events[-2:]
    assert len(fake.requests[-1]["contents"][0]["parts"]) == 1 + 2 * FILES  # the text, then a label and a file each
    figures = f"idle {idle / MIB:.0f} MiB, peak +{(peak - idle) / MIB:.0f}, settled +{(settled - idle) / MIB:.0f}"
    logging.getLogger(__name__).warning("%s; stalls: %s", figures, seen)  # shown with -rA, for the closing note
    assert peak - idle <= PEAK_BOUND, f"peak +{(peak - idle) / MIB:.0f} MiB over the bound {PEAK_BOUND / MIB:.0f}"
    assert settled - idle <= SETTLED_BOUND, f"+{(settled - idle) / MIB:.0f} MiB stayed after the turns"


async def settle(pid: int, target: int | None = None) -> int:
    """Wait (up to 10 s) for RSS to stop falling, or to reach `target`; return it."""
    deadline = time.monotonic() + 10
    last = rss(pid)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = rss(pid)
        if (target is not None and now <= target) or (target is None and now >= last):
            return now
        last = now
    return last


async def quiet_for_a_log_interval(log: Path) -> None:
    """Stall lines are rate-limited to one per 10 s: wait until a stall during the load would be logged at once."""
    if b"event loop held" in log.read_bytes():
        await asyncio.sleep(10.5)
