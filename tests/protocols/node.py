"""Runs a Node client suite under `tests/js/<name>/` (`node --test`) against a real uvicorn server and the fake Gemini.

The suites script the fake Gemini through its `/_control` API (`CHAT_BASE_URL`, `FAKE_GEMINI_URL`). `npm ci` runs
once when the suite's packages are missing (offline once installed). Used by `test_aisdk_node.py` and
`test_agui_node.py`.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from backend.settings import Settings
from tests.conftest import live
from tests.fakes.gemini import FakeGemini

JS = Path(__file__).parents[1] / "js"


def installed_suite(name: str, packages: tuple[str, ...]) -> Path:
    """The suite `tests/js/<name>` with `packages` installed (`npm ci` from its lockfile when any is missing)."""
    suite = JS / name
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip(f"node and npm are needed for the {name} client tests")
    if not all((suite / "node_modules" / package).is_dir() for package in packages):
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=suite, check=True, timeout=300)
    return suite


async def run_node_suite(suite: Path, settings: Settings, fake: FakeGemini) -> str:
    """Run every `*.test.mjs` of the suite against a live server; fail unless all pass. Returns the report."""
    async with live(settings) as client:
        env = {**os.environ, "CHAT_BASE_URL": str(client.base_url).rstrip("/"), "FAKE_GEMINI_URL": fake.root_url}
        process = await asyncio.create_subprocess_exec(
            "node",
            "--test",
            "--test-concurrency=1",
            "--test-reporter=spec",
            *sorted(str(path) for path in suite.glob("*.test.mjs")),
            cwd=suite,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
    report = output.decode(errors="replace")
    assert process.returncode == 0, report
    assert re.search(r"\bfail 0\b", report) and re.search(r"\bpass [1-9]", report), report
    return report
