"""Runs the real AI SDK clients (`ai` 5, 6 and 7 in `tests/js/aisdk/`, `node --test`) against a real uvicorn server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from backend.settings import Settings
from tests.fakes.gemini import FakeGemini
from tests.protocols.node import installed_suite, run_node_suite

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="session")
def node_suite() -> Path:
    return installed_suite("aisdk", ("ai", "ai5", "ai6", "ai7"))


async def test_the_real_ai_sdk_clients_pass(
    node_suite: Path, gemini_settings: Callable[..., Settings], fake: FakeGemini
) -> None:
    await run_node_suite(node_suite, gemini_settings(), fake)
