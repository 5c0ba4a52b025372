"""The official ChatKit server is a benchmark peer only: the backend must neither import nor depend on it."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = "chatkit"


def imported_modules(source: str) -> set[str]:
    """Top-level names of every module a Python source imports (absolute imports only)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_checker_sees_every_import_form():
    source = (
        "import chatkit\nfrom chatkit.server import ChatKitServer\nimport os, chatkit.types as t\nfrom . import x\n"
    )
    assert imported_modules(source) == {"chatkit", "os"}
    nested = "def f():\n    if True:\n        from chatkit import agents\n"
    assert FORBIDDEN in imported_modules(nested)


def test_nothing_under_backend_imports_chatkit():
    modules = sorted((ROOT / "backend").rglob("*.py"))
    assert len(modules) > 20  # the walk found the package
    offenders = [str(m.relative_to(ROOT)) for m in modules if FORBIDDEN in imported_modules(m.read_text())]
    assert offenders == []


def test_openai_chatkit_is_not_a_main_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    names = [re.split(r"[\s\[;<>=!~]", dep, maxsplit=1)[0].lower() for dep in project["project"]["dependencies"]]
    assert "litestar" in names  # parsed the real list
    assert "openai-chatkit" not in names
    assert "openai-chatkit" in str(project["dependency-groups"]["bench"])
