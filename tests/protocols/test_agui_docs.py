"""backend/protocols/AGUI.md and the README quote the snippet that tests/js/agui/snippet.test.mjs runs, verbatim."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SNIPPET = ROOT / "tests" / "js" / "agui" / "snippet.mjs"


def test_the_agui_doc_quotes_the_tested_snippet() -> None:
    doc = (ROOT / "backend" / "protocols" / "AGUI.md").read_text()
    assert f"```js\n{SNIPPET.read_text()}```" in doc


def test_the_readme_section_quotes_the_tested_snippet() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Using AG-UI (CopilotKit)", 1)[1].split("\n## ", 1)[0]
    assert f"```js\n{SNIPPET.read_text()}```" in section
