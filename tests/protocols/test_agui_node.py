"""Runs the real AG-UI client (`@ag-ui/client` in `tests/js/agui/`, `node --test`) against a real uvicorn server.

The server talks to the fake Gemini, which the Node tests script through its `/_control` API. `npm ci` runs once when
`node_modules` is missing (offline once installed).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from backend.settings import Settings
from tests.conftest import live
from tests.fakes.gemini import FakeGemini

SUITE = Path(__file__).parents[1] / "js" / "agui"
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="session")
def node_suite() -> Path:
    """The Node suite with its dependencies installed (`npm ci` from the lockfile, only when they are missing)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed for the AG-UI client tests")
    if not all((SUITE / "node_modules" / name).is_dir() for name in ("@ag-ui/client", "@ag-ui/core")):
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=SUITE, check=True, timeout=300)
    return SUITE


async def test_the_real_ag_ui_client_passes(
    node_suite: Path, gemini_settings: Callable[..., Settings], fake: FakeGemini
) -> None:
    async with live(gemini_settings()) as client:
        env = {**os.environ, "CHAT_BASE_URL": str(client.base_url).rstrip("/"), "FAKE_GEMINI_URL": fake.root_url}
        process = await asyncio.create_subprocess_exec(
            "node",
            "--test",
            "--test-concurrency=1",
            "--test-reporter=spec",
            *sorted(str(path) for path in node_suite.glob("*.test.mjs")),
            cwd=node_suite,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
    report = output.decode(errors="replace")
    assert process.returncode == 0, report
    assert re.search(r"\bfail 0\b", report) and re.search(r"\bpass [1-9]", report), report
