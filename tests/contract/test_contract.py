"""The published contract (`backend.contract`): the committed files match the code, they are served, and a real
recorded transcript type-checks against `protocol.d.ts` with the TypeScript compiler (tests/js/types)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend import contract
from backend.settings import PROJECT_ROOT, Settings
from tests.conftest import SECRET, live
from tests.fakes.gemini import FakeGemini, error_turn, function_call_turn, handoff_turn, text_turn
from tests.seeding import client_for
from tests.sse import chat

TYPES_PROJECT = PROJECT_ROOT / "tests" / "js" / "types"


def test_the_committed_contract_matches_the_code():
    for path, text in contract.generated().items():
        assert path.read_text() == text, f"{path.name} is out of date: run `python -m backend.contract`"
    assert contract.main(["--check"]) == 0


def test_the_check_reports_a_stale_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    stale = tmp_path / "protocol.d.ts"
    stale.write_text("// old\n")
    monkeypatch.setattr(contract, "generated", lambda: {stale: contract.typescript()})
    assert contract.main(["--check"]) == 1
    assert contract.main([]) == 0 and stale.read_text() == contract.typescript()


def test_every_event_and_part_type_is_published():
    definitions = contract.definitions()
    event_tags = set(definitions["Event"]["discriminator"]["mapping"])
    assert event_tags == {
        "start", "agent", "text", "thinking", "tool_call", "tool_result", "widget", "approval_request",
        "client_tool_call", "title", "error", "done",
    }  # fmt: skip
    assert set(definitions["Part"]["discriminator"]["mapping"]) == {
        "text", "thinking", "agent", "tool_call", "widget", "approval", "client_tool"
    }  # fmt: skip
    assert definitions["ToolResultEvent"]["properties"]["result"] == {"$ref": "#/$defs/ToolOutput"}
    assert definitions["StartEvent"]["required"] == ["type", "conversation_id", "message_id", "title", "status"]


async def test_the_contract_files_are_served(client: httpx.AsyncClient):
    declarations = await client.get("/static/protocol.d.ts")
    assert declarations.status_code == 200
    assert declarations.headers["content-type"].startswith("text/plain")
    assert declarations.text == contract.DECLARATIONS_FILE.read_text()
    schema = await client.get("/static/protocol.schema.json")
    assert schema.status_code == 200
    assert schema.json()["$defs"]["Event"]["oneOf"][0] == {"$ref": "#/$defs/StartEvent"}


# --- the TypeScript compiler accepts a recorded transcript -------------------------------------------------------


@pytest.fixture(scope="session")
def tsc() -> list[str]:
    """The project's pinned `tsc` (tests/js/types, installed with `npm ci` when missing). CI must have node."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        if os.environ.get("CI"):
            pytest.fail("node and npm are required in CI for the TypeScript contract check")
        pytest.skip("node is not installed")
    if not (TYPES_PROJECT / "node_modules" / "typescript").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=TYPES_PROJECT, check=True, capture_output=True)
    return ["npx", "--no-install", "tsc"]


def type_check(tsc: list[str], directory: Path, source: str) -> subprocess.CompletedProcess[str]:
    """Compile one file that imports the published declarations, strictly, without emitting anything."""
    (directory / "transcript.ts").write_text(source)
    config = {
        "extends": str(TYPES_PROJECT / "tsconfig.json"),
        "include": [],
        "files": [str(directory / "transcript.ts"), str(contract.DECLARATIONS_FILE)],
    }
    (directory / "tsconfig.json").write_text(json.dumps(config))
    return subprocess.run(
        [*tsc, "--noEmit", "-p", str(directory / "tsconfig.json")],
        cwd=TYPES_PROJECT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def transcript_source(events: list[dict[str, Any]], parts: list[dict[str, Any]]) -> str:
    module = str(contract.DECLARATIONS_FILE).removesuffix(".d.ts")
    return (
        f'import type {{ Event, Part }} from "{module}";\n\n'
        f"export const events: Event[] = {json.dumps(events, indent=2)};\n\n"
        f"export const parts: Part[] = {json.dumps(parts, indent=2)};\n"
    )


async def record(client: httpx.AsyncClient, fake: FakeGemini) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every event type from real streams (a widget, a client tool, an approval, thinking, a title, an error) and the
    parts."""
    assert (await client.post("/api/tasks", json={"title": "milk"})).status_code == 201
    theme = function_call_turn("set_theme", {"theme": "dark"})
    fake.script_unary(text_turn("Tasks and theme"))  # the title, while the first turn's calls wait 2 s
    fake.script(handoff_turn(), function_call_turn("list_tasks", {}, delay=2.0), theme)
    first = await chat(client, {"message": "show tasks then dark theme"})
    conversation_id = first.events[0]["conversation_id"]
    call = first.of("client_tool_call")[0]
    fake.script(function_call_turn("delete_task", {"task": "milk"}))
    body = {"thread_id": conversation_id, "client_tool_results": [{"id": call["id"], "result": ["a", 1]}]}
    second = await chat(client, body)
    approval = second.of("approval_request")[0]
    fake.script(text_turn(["All ", "done."], thinking=["Let me wrap up."]))
    third = await chat(client, {"thread_id": conversation_id, "approvals": [{"id": approval["id"], "approve": False}]})
    fake.script(error_turn(400))
    failed = await chat(client, {"thread_id": conversation_id, "message": "again"})
    events = [*first.events, *second.events, *third.events, *failed.events]
    detail = (await client.get(f"/api/conversations/{conversation_id}")).json()
    parts = [part for message in detail["messages"] for part in message["parts"]]
    return events, parts


@pytest.mark.timeout(180)
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # one run: the types do not depend on it
async def test_a_recorded_transcript_type_checks_against_the_declarations(
    tsc: list[str], gemini_settings: Callable[..., Settings], fake: FakeGemini, tmp_path: Path
):
    async with live(gemini_settings(titles=True)) as client:
        events, parts = await record(client, fake)
    assert {e["type"] for e in events} == set(contract.definitions()["Event"]["discriminator"]["mapping"])
    assert {p["type"] for p in parts} == set(contract.definitions()["Part"]["discriminator"]["mapping"])
    checked = type_check(tsc, tmp_path, transcript_source(events, parts))
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # The check can fail: a misspelt field, an unknown type and a wrong result shape are each refused.
    wrong = [{"type": "text", "text": "hi"}, {"type": "progress", "content": "x"}]
    bare = {"type": "tool_call", "id": "1", "name": "n", "args": {}, "result": "a bare string"}
    refused = type_check(tsc, tmp_path, transcript_source(wrong, [bare]))
    assert refused.returncode != 0
    assert refused.stdout.count("error TS") >= 3, refused.stdout


# --- the API docs page works offline -----------------------------------------------------------------------------


async def test_the_docs_page_loads_everything_from_this_server(make_settings: Callable[..., Settings]):
    async with client_for(make_settings(auth_secret=SECRET)) as http:
        page = await http.get("/schema/swagger")
        assert page.status_code == 200, page.text
        head = page.text.split("<body", 1)[0]
        references = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
        assert len(references) >= 4 and all(r.startswith("/") and not r.startswith("//") for r in references)
        assert "http://" not in head and "https://" not in head and "//cdn" not in page.text
        assets = {reference: await http.get(reference) for reference in references}
        assert all(a.status_code == 200 and len(a.content) > 500 for a in assets.values()), assets
        (bundle,) = [a for reference, a in assets.items() if reference.endswith("/swagger-ui-bundle.js")]
        assert "SwaggerUIBundle" in bundle.text
        assert (await http.get("/schema-assets/%00x")).status_code == 404
