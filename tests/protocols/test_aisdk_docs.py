"""backend/protocols/AISDK.md quotes the snippet that tests/js/aisdk/snippet.test.mjs runs, verbatim."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_documented_snippet_is_the_tested_one() -> None:
    doc = (ROOT / "backend" / "protocols" / "AISDK.md").read_text()
    snippet = (ROOT / "tests" / "js" / "aisdk" / "snippet.mjs").read_text()
    assert f"```js\n{snippet}```" in doc


def test_the_readme_quotes_the_tested_use_chat_options() -> None:
    """The README's `useChat({...})` block is the tested `chatOptions` body, line for line (comments aside)."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Using the AI SDK (useChat) or assistant-ui", 1)[1].split("\n## ", 1)[0]
    block = section.split("```js\n", 1)[1].split("```", 1)[0]
    snippet = {line.split(" //")[0].strip() for line in (ROOT / "tests" / "js" / "aisdk" / "snippet.mjs").open()}
    quoted = [line.split(" //")[0].strip() for line in block.splitlines()[1:-1]]
    assert block.startswith("const chat = useChat({\n") and block.endswith("});\n")
    assert [line for line in quoted if line and not line.startswith("//") and line not in snippet] == []
