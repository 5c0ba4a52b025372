"""Search on the 1,000,000-message PostgreSQL database: HTTP latency of `GET /api/conversations?q=` and its plans.

Uses the list benchmarks' dataset (`dbpath.ensure_dataset`: 100,000 conversations of the local user, 10 messages
each), in its own database (default `chatkit_search_bench`, created once and reused). The dataset's text is nearly
the same in every conversation, so besides its own words this run plants one word, once per conversation, in a
known share of the conversations (an idempotent UPDATE; the generated tsvector follows):

- `12345`: a number that is in one conversation (its title and its five user messages);
- `kangaroo`: planted in one message of 1% of the conversations (1,000);
- `ordinary`: in every assistant message (500,000 messages, every conversation) — the worst case for a ranked
  search, which must score every match before it knows the best 20.

For each query: sequential HTTP latencies through one uvicorn worker (after warm-up; the plain list's first page
as the baseline), then `EXPLAIN (ANALYZE, BUFFERS)` of the ranked SQL the service sends. Writes `report.md` and
`results.json` under `tests/bench/results/search-<stamp>/`.

    .venv/bin/python -m tests.bench.search [--pg postgresql://postgres@127.0.0.1:5432/postgres] [--repeats 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import psycopg

from tests.bench import dbpath

ROOT = Path(__file__).resolve().parents[2]
DATABASE = "chatkit_search_bench"
PLANTED = "kangaroo"
PLANT_EVERY = 100  # conversations
QUERIES = {
    "rare word (1 conversation)": "12345",
    f"planted word ({dbpath.CONVERSATIONS // PLANT_EVERY:,} conversations)": PLANTED,
    "two words (1 conversation)": "conversation 12345",
    "common word (every conversation, 500,000 messages)": "ordinary",
}
PLANT_SQL = f"""
UPDATE messages SET content = content || ' A {PLANTED} crossed the road.'
WHERE seq = 3 AND content NOT LIKE '%{PLANTED}%'
  AND conversation_id IN (SELECT id FROM conversations WHERE title LIKE '%00')
"""


def log(message: str) -> None:
    """Progress on stderr (the bench's own output, not the app's logging)."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(url: str, port: int) -> subprocess.Popen[bytes]:
    """One uvicorn worker of the app on `url` (local mode, offline model), ready to answer."""
    env = {k: v for k, v in os.environ.items() if k not in {"AUTH_SECRET", "GEMINI_API_KEY"}}
    env |= {
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WORKERS": "1",
        "DATABASE_URL": url,
        "MIGRATE_ON_STARTUP": "false",
        "OFFLINE_MODEL": "true",
        "LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen([sys.executable, "-m", "backend"], cwd=ROOT, env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if dbpath._get(f"http://127.0.0.1:{port}/ready")[1] == 200:
                return proc
        except OSError:
            time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    raise RuntimeError("the server did not become ready")


def get(url: str) -> tuple[float, int, bytes]:
    """One timed GET: seconds, status (an error status too) and body."""
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            body, status = resp.read(), resp.status
    except urllib.error.HTTPError as error:
        body, status = error.read(), error.code
    return time.perf_counter() - started, status, body


def measure(server: str, repeats: int) -> dict[str, Any]:
    """Sequential latencies of each query's first page, and of the second page of the planted word."""
    out: dict[str, Any] = {}
    # The plain list's first page is the baseline: what any request of this endpoint costs without a search.
    targets: dict[str, dict[str, str]] = {"plain list, first page (no q)": {}}
    targets |= {label: {"q": q} for label, q in QUERIES.items()}
    first = json.loads(get(f"{server}/api/conversations?" + urllib.parse.urlencode({"q": PLANTED}))[2])
    targets["planted word, page 2 (cursor)"] = {"q": PLANTED, "cursor": first["next_cursor"]}
    for label, params in targets.items():
        url = f"{server}/api/conversations?" + urllib.parse.urlencode(params)
        _, status, body = get(url)
        hits = len(json.loads(body)["data"]) if status == 200 else 0
        for _ in range(5):
            get(url)
        samples, statuses = [], set()
        for _ in range(repeats if status == 200 else 5):  # a failing query: a few samples say enough
            seconds, status, _body = get(url)
            samples.append(seconds)
            statuses.add(status)
        out[label] = dbpath._stats(samples) | {"statuses": sorted(statuses), "results_on_page": hits}
        log(f"  {label}: p50 {out[label]['p50_ms']:.1f} ms, p90 {out[label]['p90_ms']:.1f} ms")
    return out


def plans(sa_url: str) -> dict[str, str]:
    """EXPLAIN (ANALYZE, BUFFERS) of the ranked statement (the first the search sends) for each query."""
    from backend.conversations.search import search_conversations

    def call(q: str) -> Any:
        return lambda session: search_conversations(session, dbpath.USER, q, limit=20)

    return asyncio.run(dbpath.explain_calls(sa_url, [(label, call(q)) for label, q in QUERIES.items()], statement=0))


def main() -> None:
    """Seed or reuse the dataset, plant the word, measure, explain, write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", default=os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--db", default=DATABASE)
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args()
    from backend.settings import normalize_database_url

    dataset = dbpath.ensure_dataset(args.pg, args.db, log=log)
    url = args.pg.rsplit("/", 1)[0] + f"/{args.db}"
    with psycopg.connect(url, autocommit=True) as conn:
        planted = conn.execute(PLANT_SQL).rowcount
        if planted:
            conn.execute("VACUUM ANALYZE messages")
        log(f"  planted '{PLANTED}' in {planted} more message(s)")
    port = free_port()
    proc = start_server(url, port)
    try:
        http = measure(f"http://127.0.0.1:{port}", args.repeats)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    explained = plans(normalize_database_url(url))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = ROOT / "tests" / "bench" / "results" / f"search-{stamp}"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "results.json").write_text(json.dumps({"dataset": dataset, "http": http, "plans": explained}, indent=2))
    lines = [
        f"# Search on {dbpath.CONVERSATIONS:,} conversations / "
        f"{dbpath.CONVERSATIONS * dbpath.MESSAGES_PER_CONVERSATION:,} messages (PostgreSQL)",
        "",
        f"{args.repeats} sequential requests each, one worker, after 5 warm-up requests.",
        "",
        "| query | statuses | results on page | p50 ms | p90 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, stats in http.items():
        lines.append(
            f"| {label} | {stats['statuses']} | {stats['results_on_page']} | {stats['p50_ms']:.1f} | "
            f"{stats['p90_ms']:.1f} | {stats['p99_ms']:.1f} | {stats['max_ms']:.1f} |"
        )
    for label, plan in explained.items():
        lines += ["", f"## {label}", "", "```", plan, "```"]
    (run_dir / "report.md").write_text("\n".join(lines) + "\n")
    log(f"  report: {run_dir / 'report.md'}")


if __name__ == "__main__":
    main()
