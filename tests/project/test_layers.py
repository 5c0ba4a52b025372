"""The layers' import rules: the turn runtime (`backend/chat/`) knows no example team, no task tools, no MCP client.

The example team (`backend/team/`) is the part users replace; the runtime receives its starting agent and nothing else.
The one edge from the runtime into the team is the model factory's fallback to the offline demo model.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.project.test_no_chatkit_import import imported_modules
from tests.protocols.test_protocol_boundaries import FORBIDDEN_IN_ADAPTERS

ROOT = Path(__file__).resolve().parents[2]
FACTORY_FALLBACK = ("backend/chat/model.py", "backend.team.offline")


def full_imports(path: Path) -> set[str]:
    """Every absolute module path a source file imports (`from a.b import c` gives `a.b`)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def offenders(folder: str, forbidden: tuple[str, ...], allowed: tuple[tuple[str, str], ...] = ()) -> list[str]:
    """`file: module` for every import of a forbidden package by a module under `folder`."""
    found = []
    modules = sorted((ROOT / folder).rglob("*.py")) if (ROOT / folder).is_dir() else [ROOT / folder]
    assert modules and all(m.exists() for m in modules), folder
    for module in modules:
        relative = str(module.relative_to(ROOT))
        for name in sorted(full_imports(module)):
            inside = any(name == package or name.startswith(f"{package}.") for package in forbidden)
            if inside and (relative, name) not in allowed:
                found.append(f"{relative}: {name}")
    return found


def test_the_checker_sees_full_module_paths(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "import backend.tasks.tools\nfrom backend.mcp import client\ndef f():\n    from backend.team import x\n"
    )
    assert full_imports(source) == {"backend.tasks.tools", "backend.mcp", "backend.team"}
    assert "backend" in imported_modules(source.read_text())
    assert "backend/app.py: backend.mcp.client" in offenders("backend/app.py", ("backend.mcp",))  # it sees a real edge
    assert not any("mcp_config" in found for found in offenders("backend/settings.py", ("backend.mcp",)))


def test_the_turn_runtime_imports_no_team_no_task_tools_and_no_mcp():
    forbidden = ("backend.tasks", "backend.mcp", "backend.team")
    assert offenders("backend/chat", forbidden, allowed=(FACTORY_FALLBACK,)) == []


def test_settings_import_no_mcp():
    assert offenders("backend/settings.py", ("backend.mcp", "backend.team", "backend.chat")) == []


def test_the_allowed_edge_still_exists():
    """If the factory stops falling back to the demo model, drop the exception above rather than keep it stale."""
    assert FACTORY_FALLBACK[1] in full_imports(ROOT / FACTORY_FALLBACK[0])


def test_the_operators_feedback_command_needs_no_turn_runtime_protocol_or_team():
    """`python -m backend.feedback` reads the database only: no turn engine, protocol adapter or example team."""
    assert offenders("backend/feedback", ("backend.chat", "backend.protocols", "backend.team", "backend.mcp")) == []


def test_only_the_model_factory_reaches_the_offline_titles():
    """The turn engine receives its title model; only the factory picks the offline demo's (the one allowed edge)."""
    assert offenders("backend/chat/titles.py", ("backend.team",)) == []
    assert offenders("backend/chat/service.py", ("backend.team", "backend.chat.model")) == []


def test_the_chatkit_adapter_imports_no_store_no_sdk_no_litellm_and_no_sqlmodel():
    """`backend/protocols/chatkit` translates: it reaches conversations and files through their access services only."""
    forbidden = (
        "backend.chat.store",
        "backend.conversations.store",
        "backend.conversations.service",
        "backend.files.service",
        "backend.db",
        "backend.models",
        "agents",
        "litellm",
        "sqlmodel",
        "sqlalchemy",
        "chatkit",
    )
    assert offenders("backend/protocols/chatkit", forbidden) == []
    assert "backend.conversations.access" in full_imports(ROOT / "backend/protocols/chatkit/routes.py")


def test_the_ag_ui_adapter_reaches_only_the_engine_seam() -> None:
    """AG-UI's adapter translates: no store, SDK, LiteLLM or database, and not the test-only `ag-ui-protocol` package
    (its pydantic models check our events in the tests; the server keeps its own small request models)."""
    forbidden = (
        *FORBIDDEN_IN_ADAPTERS,
        "ag_ui",
        "backend.chat.client_tools",
        "backend.protocols.aisdk",
        "backend.protocols.chatkit",
    )
    assert offenders("backend/protocols/agui", forbidden) == []
    assert offenders("backend/chat", ("backend.protocols",)) == [], "the engine knows no protocol"


def test_protocol_helpers_shared_by_adapters_import_no_adapter() -> None:
    """`backend/protocols/ids.py`, `files.py` and `stream.py` serve every adapter; they depend on none of them."""
    adapters = ("backend.protocols.aisdk", "backend.protocols.agui", "backend.protocols.chatkit")
    for shared in ("backend/protocols/ids.py", "backend/protocols/files.py", "backend/protocols/stream.py"):
        assert offenders(shared, (*adapters, "backend.chat.store", "agents", "sqlmodel")) == []
