"""The layers' import rules: the turn runtime (`backend/chat/`) knows no example team, no task tools, no MCP client.

The example team (`backend/team/`) is the part users replace; the runtime receives its starting agent and nothing else.
The one edge from the runtime into the team is the model factory's fallback to the offline demo model.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.project.test_no_chatkit_import import imported_modules

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
