"""Do the bench tweaks keep behaviour? Drive the same conversation through plain and tweaked servers and compare.

    .venv/bin/python -m tests.bench.check_tweaks [--tweaks safe,lean_builder,direct_gemini] [--pg URL]

For each server (``python -m backend``, then ``tests.bench.server`` with the tweaks) on a fresh PostgreSQL
database and the bench fake in tool mode: start a conversation, continue it twice (the run lock must have been
released), read it back, page through the conversation list with a small page size and a cursor, and read the
run-lock columns in the database. The normalised transcripts (ids and times removed) must be equal. This is a
sanity check of the prototypes, not a test suite: it prints the differences and exits non-zero on any.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

import psycopg

from tests.bench import run as bench
from tests.bench.dbpath import recreate_database
from tests.bench.fake import LoadConfig

DB = "chatkit_bench_check"


def _post_stream(base: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    req = urllib.request.Request(f"{base}/chatkit", json.dumps(body).encode(), {"Content-Type": "application/json"})
    events = []
    with urllib.request.urlopen(req, timeout=60) as resp:
        for raw in resp.read().decode().split("\n\n"):
            line = raw.strip()
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[6:]))
    return events


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


def _strip(value: Any) -> Any:
    volatile = {"id", "conversation_id", "message_id", "created_at", "updated_at", "next_cursor", "thread_id"}
    if isinstance(value, dict):
        return {k: ("<id>" if k in volatile else _strip(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    if isinstance(value, str) and value.startswith("call_"):
        return "<call>"
    return value


def transcript(spec: bench.ServerSpec, pg: str, run_dir: Path, fake: bench.Proc, procs: list[bench.Proc]) -> dict:
    """Everything the client and the database show after the scripted conversation."""
    recreate_database(pg, DB)
    url = pg.rsplit("/", 1)[0] + f"/{DB}"
    server = bench.start_server(spec, 1, run_dir, fake.port, None, url, "WARNING", procs)
    base = f"http://127.0.0.1:{server.port}"
    try:
        out: dict[str, Any] = {}
        first = _post_stream(base, {"message": "please list my tasks"})
        conversation = next(e["conversation_id"] for e in first if e["type"] == "start")
        second = _post_stream(base, {"message": "and again", "thread_id": conversation})
        third = _post_stream(base, {"message": "one more", "thread_id": conversation})
        for i in range(3):
            _post_stream(base, {"message": f"another conversation {i}"})
        out["streams"] = [_strip(first), _strip(second), _strip(third)]
        out["conversation"] = _strip(_get(f"{base}/api/conversations/{conversation}"))
        out["seqs"] = [m["seq"] for m in _get(f"{base}/api/conversations/{conversation}")["messages"]]
        titles, cursor, pages = [], None, 0
        while pages < 10:
            page = _get(f"{base}/api/conversations?limit=2" + (f"&cursor={cursor}" if cursor else ""))
            titles += [c["title"] for c in page["data"]]
            pages += 1
            cursor = page["next_cursor"]
            if not cursor:
                break
        out["list_titles"] = titles
        with psycopg.connect(url) as conn:
            out["locks_held"] = conn.execute(
                "SELECT count(*) FROM conversations WHERE run_id IS NOT NULL OR run_expires_at IS NOT NULL"
            ).fetchone()[0]  # type: ignore[index]
            out["messages"] = conn.execute(
                "SELECT role, status, seq, content, tool_calls::text, usage::text, items::text, error_code "
                "FROM messages m JOIN conversations c ON c.id = m.conversation_id ORDER BY c.title, m.seq"
            ).fetchall()
        out["messages"] = [
            _strip([*row[:4], *(json.loads(v) if v else None for v in row[4:7]), row[7]]) for row in out["messages"]
        ]
        return out
    finally:
        server.stop()


def main() -> int:
    """Compare plain and tweaked servers."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.check_tweaks")
    parser.add_argument("--tweaks", default="safe,lean_builder")
    parser.add_argument("--pg", default=bench.DEFAULT_PG)
    args = parser.parse_args()
    run_dir = bench.RESULTS / "check"
    for sub in ("logs", "tmp"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    procs: list[bench.Proc] = []
    try:
        fake = bench.start_fake(run_dir, None)
        procs.append(fake)
        load = LoadConfig(tokens=12, tokens_per_chunk=3, token_delay=0.001, time_to_first_chunk=0.01)
        bench.http_json(f"http://127.0.0.1:{fake.port}/_bench/config", dataclasses.asdict(load))
        plain = transcript(bench.ServerSpec("plain", "ours"), args.pg, run_dir, fake, procs)
        tweaked = transcript(bench.ServerSpec("tweaked", "ours", args.tweaks), args.pg, run_dir, fake, procs)
    finally:
        for proc in procs:
            proc.stop()
    diffs = [key for key in plain if plain[key] != tweaked[key]]
    for key in diffs:
        print(f"DIFFERENT {key}:\n  plain:   {str(plain[key])[:2000]}\n  tweaked: {str(tweaked[key])[:2000]}")  # noqa: T201
    print(  # noqa: T201
        f"checked: {', '.join(plain)}; seqs {plain['seqs']}, {len(plain['list_titles'])} conversations listed, "
        f"locks held after: {plain['locks_held']} / {tweaked['locks_held']}"
    )
    print("SAME" if not diffs else f"{len(diffs)} differences")  # noqa: T201
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
