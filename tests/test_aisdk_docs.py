"""backend/protocols/AISDK.md quotes the snippet that tests/js/aisdk/snippet.test.mjs runs, verbatim."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_documented_snippet_is_the_tested_one() -> None:
    doc = (ROOT / "backend" / "protocols" / "AISDK.md").read_text()
    snippet = (ROOT / "tests" / "js" / "aisdk" / "snippet.mjs").read_text()
    assert f"```js\n{snippet}```" in doc
