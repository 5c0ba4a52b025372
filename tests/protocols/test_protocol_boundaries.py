"""Protocol adapters (`backend/protocols/`) translate: they never reach the store, the Agents SDK, LiteLLM or the
database; and the turn engine (`backend/chat/`) knows no protocol."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# What an adapter must not import (a module or anything under it).
FORBIDDEN_IN_ADAPTERS = (
    "agents",
    "litellm",
    "openai",
    "sqlalchemy",
    "sqlmodel",
    "psycopg",
    "backend.db",
    "backend.models",
    "backend.chat.store",
    "backend.chat.turn",
    "backend.chat.live",
    "backend.chat.translate",
    "backend.chat.model",
    "backend.chat.agent",
    "backend.files.service",
)


def imported_modules(source: str) -> set[str]:
    """Every module a Python source imports by absolute name, with each `from x import y` also as `x.y`."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def forbidden(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def test_the_checker_sees_every_import_form() -> None:
    source = "import agents\nfrom backend.chat import store\nfrom backend.db import Database\nfrom . import x\n"
    found = {m for m in imported_modules(source) if forbidden(m, FORBIDDEN_IN_ADAPTERS)}
    assert found == {"agents", "backend.chat.store", "backend.db", "backend.db.Database"}
    nested = "def f():\n    from litellm import acompletion\n"
    assert any(forbidden(m, FORBIDDEN_IN_ADAPTERS) for m in imported_modules(nested))


def test_adapters_never_import_the_store_the_sdk_litellm_or_the_database() -> None:
    modules = sorted((ROOT / "backend" / "protocols").rglob("*.py"))
    assert len(modules) >= 4  # the walk found the adapters
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            m for m in imported_modules(path.read_text()) if forbidden(m, FORBIDDEN_IN_ADAPTERS)
        )
        for path in modules
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_engine_knows_no_protocol() -> None:
    """Not the adapters, and not our native body either: `/chatkit`'s routes and schemas are its adapter."""
    native_adapter = {ROOT / "backend" / "chat" / "routes.py", ROOT / "backend" / "chat" / "schemas.py"}
    modules = sorted(set((ROOT / "backend" / "chat").rglob("*.py")) - native_adapter)
    assert len(modules) > 15
    protocols = ("backend.protocols", "backend.chat.schemas", "backend.chat.routes")
    offenders = [
        str(path.relative_to(ROOT))
        for path in modules
        if any(forbidden(m, protocols) for m in imported_modules(path.read_text()))
    ]
    assert offenders == []
