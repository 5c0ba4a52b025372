"""Runs the real AG-UI client (`@ag-ui/client` 1.0 in `tests/js/agui/`, `node --test`) against a real uvicorn server:
a text turn, a tool turn, a frontend-tool round trip, an approval interrupt and its resume, errors, and the README's
snippet (frontend tools, approvals, a rejoin after a dropped connection)."""

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
    return installed_suite("agui", ("@ag-ui/client", "@ag-ui/core"))


async def test_the_real_ag_ui_client_passes(
    node_suite: Path, gemini_settings: Callable[..., Settings], fake: FakeGemini
) -> None:
    report = await run_node_suite(node_suite, gemini_settings(), fake)
    assert "frontend tool round trip" in report and "rejoins a reply" in report, report
