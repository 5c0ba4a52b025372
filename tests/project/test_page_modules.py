"""The chat page's JavaScript modules: DOM-only rendering, and imports that form no cycle.

The browser tests (tests/browser/) check what the page does; these check two properties of its source that no
behaviour shows until it is too late: no module writes HTML from strings, and the modules import one another
without a cycle (each owns one concern; the entry point wires them).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

STATIC = Path(__file__).resolve().parents[2] / "backend" / "web" / "static"
HTML_SINKS = re.compile(r"\.(innerHTML|outerHTML)\s*[+]?=|insertAdjacentHTML\s*\(|document\.write\s*\(")
LOCAL_IMPORT = re.compile(r"""(?:\bfrom|^\s*import)\s*["']\./([\w.]+)["']""", re.MULTILINE)
COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.DOTALL)


def modules() -> dict[str, str]:
    return {path.name: COMMENT.sub("", path.read_text(encoding="utf-8")) for path in sorted(STATIC.glob("*.js"))}


def import_graph(sources: dict[str, str]) -> dict[str, list[str]]:
    return {name: LOCAL_IMPORT.findall(source) for name, source in sources.items()}


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A path that comes back to where it started, or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        for target in graph.get(node, []):
            cycle = visit(target, [*path, node])
            if cycle:
                return cycle
        done.add(node)
        return None

    for start in graph:
        cycle = visit(start, [])
        if cycle:
            return cycle
    return None


def test_the_page_is_split_into_modules_that_all_exist() -> None:
    graph = import_graph(modules())
    assert {"app.js", "auth.js", "api.js", "sidebar.js", "composer.js", "turn_flow.js"} <= graph.keys()
    missing = {(name, target) for name, targets in graph.items() for target in targets if target not in graph}
    assert not missing, f"imports of modules that do not exist: {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_module_writes_html_from_strings(name: str) -> None:
    sink = HTML_SINKS.search(modules()[name])
    assert sink is None, f"{name} writes HTML ({sink.group(0) if sink else ''}); build nodes and set textContent"


def test_the_modules_import_one_another_without_a_cycle() -> None:
    assert find_cycle(import_graph(modules())) is None


def test_the_checks_see_a_cycle_and_an_html_sink() -> None:
    """The two checks above can fail: a cycle and an innerHTML assignment written here are found."""
    assert find_cycle({"a.js": ["b.js"], "b.js": ["c.js"], "c.js": ["a.js"]}) == ["a.js", "b.js", "c.js", "a.js"]
    source = 'import { x } from "./b.js";\nexport { y } from "./c.js";\nimport "./d.js";\nexport const s = "./e.js";'
    assert import_graph({"a.js": source}) == {"a.js": ["b.js", "c.js", "d.js"]}
    assert HTML_SINKS.search("node.innerHTML = text;")
    assert HTML_SINKS.search("node.insertAdjacentHTML('beforeend', text)")
    assert not HTML_SINKS.search(COMMENT.sub("", "// nothing is ever assigned to innerHTML\nnode.textContent = text;"))
