# ruff: noqa: RUF001, RUF002
r"""Benchmark the chat backend against a fixed-timing fake Gemini, next to a minimal relay (the floor), in one run.

    .venv/bin/python -m tests.bench.run            # full run, ~8-10 minutes
    .venv/bin/python -m tests.bench.run --quick    # ~3 minutes
    .venv/bin/python -m tests.bench.run --only c200-w2 --no-idle --no-db --variant tweaked=all

What runs (each in its own process):

* the fake Gemini (`tests.bench.fake`), pinned with the load generator to the client core;
* our server, as deployed: ``python -m backend``'s start-up and app on PostgreSQL (a fresh database
  ``chatkit_bench``), through the launcher `tests.bench.server` with no tweaks (it adds the lag sampler), pinned
  to the server core (two workers: both cores); ``--variant NAME=TWEAKS`` adds runs of that launcher
  with candidate optimisations applied (see that module) to the same code;
* the ChatKit peer (`tests.bench.chatkit_peer`): the official ChatKit server on FastAPI, same pinning and workers;
* the floor (`tests.bench.floor`): a bare ASGI relay under the same uvicorn, same pinning, same workers;
* the load generator (`tests.bench.loadgen`): N closed-loop streams for warm-up + window (+ drain).

For each cell (concurrency, workers, tokens per chunk, tool turn) every server gets the same load; the server's
CPU time (utime+stime of uvicorn's whole process tree, from /proc) and RSS are sampled over the measured window.
Then: idle-stream memory (N streams held open before the first token), and the database path (100k conversations,
1M messages) with EXPLAIN ANALYZE plans. Results: ``tests/bench/results/<stamp>/report.md`` and ``results.json``
(and ``tests/bench/results/latest`` points at the newest run).

Only 127.0.0.1 is contacted. Loops are bounded in count and time. Nothing here asserts on timing.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.bench import lag, procstat
from tests.bench.fake import LoadConfig

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "tests" / "bench" / "results"
PY = sys.executable
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
STREAM_DB = os.environ.get("BENCH_STREAM_DB", "chatkit_bench")  # dropped and recreated by every run
DATASET_DB = "chatkit_bench_db"
STALLS = bool(os.environ.get("BENCH_STALLS"))  # also sample what holds the loop (see tests/bench/lag.py)
SECRET_VARS = ("AUTH_SECRET", "BETTER_AUTH_SECRET", "JWT_SECRET", "GOOGLE_API_KEY", "OPENAI_API_KEY")


def log(*parts: object) -> None:
    """Progress on stderr."""
    print(*parts, file=sys.stderr, flush=True)  # noqa: T201


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_json(url: str, body: dict[str, Any] | None = None, timeout: float = 10) -> Any:
    """GET (or POST `body` as JSON) to a loopback URL and decode the JSON answer."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read() or b"null")


def quantile(values: list[float], q: float) -> float | None:
    """Nearest-rank quantile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# --------------------------------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Proc:
    """A child process we started (and will stop, by its own pid only)."""

    name: str
    popen: subprocess.Popen[bytes]
    port: int = 0
    log_path: Path | None = None
    lag_dir: Path | None = None  # where the server's processes write their event-loop lag samples
    protocol: str = "ours"  # the load generator's protocol for this server ("chatkit" for the peer)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM (uvicorn drains), then SIGKILL the process group if it lingers."""
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)


def spawn(
    name: str, argv: list[str], env: dict[str, str], cpus: set[int] | None, log_path: Path, cwd: Path = ROOT
) -> Proc:
    """Start a process in its own process group (so stop() reaches uvicorn's workers), pinned to `cpus`."""
    log_file = log_path.open("ab")

    # Without an explicit set the child would inherit this process's pinning (the client CPU): several workers
    # get every CPU.
    affinity = cpus or set(range(os.cpu_count() or 1))

    def pre() -> None:
        os.setsid()
        os.sched_setaffinity(0, affinity)

    popen = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log_file, stderr=subprocess.STDOUT, preexec_fn=pre)
    log_file.close()
    return Proc(name, popen, log_path=log_path)


def wait_quiet(others: list[Proc], *, below_pct: float = 3.0, timeout: float = 60.0) -> float:
    """Wait until the other servers use under `below_pct` % CPU (over 0.5 s), so none measures during another's drain.

    A server may go on working after the load generator stopped waiting for it (ours finishes a turn whose client
    left; the peer may too), on the core the next server is measured on. Returns the seconds waited.
    """
    begun = time.monotonic()
    pids = [pid for proc in others for pid in procstat.tree(proc.pid)]
    while pids and time.monotonic() - begun < timeout:
        before = procstat.cpu_seconds(pids)
        time.sleep(0.5)
        if 100 * (procstat.cpu_seconds(pids) - before) / 0.5 < below_pct:
            break
    return time.monotonic() - begun


def wait_http(url: str, proc: Proc, timeout: float) -> None:
    """Poll `url` until it answers 200, the process dies, or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}; see {proc.log_path}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as resp:
            if resp.status == 200:
                return
        time.sleep(0.25)
    raise RuntimeError(f"{proc.name} did not answer {url} within {timeout} s; see {proc.log_path}")


def start_fake(run_dir: Path, cpus: set[int] | None) -> Proc:
    """The fake in its own process; its port is read from its READY line."""
    path = run_dir / "logs" / "fake.log"
    out = subprocess.Popen(
        [PY, "-m", "tests.bench.fake", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=path.open("ab"),
        preexec_fn=lambda: (os.setsid(), cpus and os.sched_setaffinity(0, cpus)),
    )
    assert out.stdout is not None
    line = out.stdout.readline().decode().strip()
    if not line.startswith("READY "):
        out.kill()
        raise RuntimeError(f"the fake did not start: {line!r}; see {path}")
    return Proc("fake", out, port=int(line.split()[1]), log_path=path)


def server_env(*, port: int, workers: int, database_url: str, fake_port: int, log_level: str) -> dict[str, str]:
    """The environment of our server: PostgreSQL, the fake as Gemini, local mode (no AUTH_SECRET)."""
    env = {k: v for k, v in os.environ.items() if k not in SECRET_VARS}
    env.update(
        HOST="127.0.0.1",
        PORT=str(port),
        WORKERS=str(workers),
        DATABASE_URL=database_url,
        GEMINI_API_KEY="bench-key",
        GEMINI_API_BASE=f"http://127.0.0.1:{fake_port}/v1beta",
        MIGRATE_ON_STARTUP="true",
        OFFLINE_MODEL="false",
        TITLES="off",  # the load measures replies; a title call per new conversation would add model calls
        LOG_LEVEL=log_level,
        PYTHONUNBUFFERED="1",
        MAX_TURNS_PER_USER="0",  # every stream of the load is the one local user
    )
    env.pop("MODEL", None)
    return env


@dataclass
class ServerSpec:
    """One server under test: ours (as deployed, or with bench tweaks), the ChatKit peer, or the floor."""

    label: str  # "ours", "chatkit", "sdk", "sdk-ours", "floor", or a variant name
    kind: str  # "ours" | "chatkit" | "sdk" | "sdk-ours" | "floor"
    tweaks: str = ""  # for kind "ours": BENCH_TWEAKS of tests.bench.server ("" = plain `python -m backend`)
    root: Path = ROOT  # for kind "ours": the checkout whose backend/ (and launcher) runs (`--tree`)


PEER_MODULES = {
    "floor": "tests.bench.floor",
    "chatkit": "tests.bench.chatkit_peer",
    "sdk": "tests.bench.sdk_floor",
    "sdk-ours": "tests.bench.sdk_floor",
}


def start_server(
    spec: ServerSpec,
    workers: int,
    run_dir: Path,
    fake_port: int,
    cpus: set[int] | None,
    database_url: str,
    log_level: str,
    procs: list[Proc],
) -> Proc:
    """Start one server (registered in `procs` at once, so it is stopped whatever happens) and wait for /health."""
    port = free_port()
    path = run_dir / "logs" / f"{spec.label}-w{workers}.log"
    lag_dir = run_dir / "lag" / f"{spec.label}-w{workers}"
    lag_dir.mkdir(parents=True, exist_ok=True)
    if spec.kind in PEER_MODULES:
        # LOG_LEVEL would turn on the ChatKit SDK's own handler at that level (an INFO line per request).
        env = {k: v for k, v in os.environ.items() if k not in (*SECRET_VARS, "LOG_LEVEL")}
        if spec.kind == "sdk-ours":
            env["SDK_FLOOR_MODEL"] = "finish_chunk"  # the same floor on our model (`FinishChunkLitellmModel`)
        argv = [
            PY,
            "-m",
            PEER_MODULES[spec.kind],
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--upstream",
            f"http://127.0.0.1:{fake_port}/v1beta",
        ]
    else:
        env = server_env(
            port=port, workers=workers, database_url=database_url, fake_port=fake_port, log_level=log_level
        )
        # The bench launcher even without tweaks: `python -m backend`'s own start-up and app, plus the lag sampler.
        env["BENCH_TWEAKS"] = spec.tweaks
        argv = [PY, "-m", "tests.bench.server"]
    env["BENCH_LAG_DIR"] = str(lag_dir)
    if STALLS:
        env["BENCH_STALLS"] = "1"
    proc = spawn(f"{spec.label}-w{workers}", argv, env, cpus, path, cwd=spec.root)
    procs.append(proc)
    proc.port, proc.lag_dir, proc.protocol = port, lag_dir, "chatkit" if spec.kind == "chatkit" else "ours"
    wait_http(f"http://127.0.0.1:{port}/health", proc, timeout=120)
    # uvicorn answers as soon as one worker is up: wait for all of them to have imported the app.
    if workers > 1:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(procstat.tree(proc.pid)) < workers + 1:
            time.sleep(0.25)
        time.sleep(3.0 if spec.kind != "floor" else 0.5)
    return proc


# --------------------------------------------------------------------------------------------------------------------
# Cells
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One load shape."""

    concurrency: int
    workers: int
    tokens_per_chunk: int
    function_call: bool

    @property
    def name(self) -> str:
        return f"c{self.concurrency}-w{self.workers}-t{self.tokens_per_chunk}" + ("-tool" if self.function_call else "")


@dataclass
class Timing:
    """Durations of one closed-loop run, in seconds."""

    warmup: float
    window: float
    drain: float
    stream_timeout: float


def run_loadgen(cfg: dict[str, Any], run_dir: Path, tag: str, cpus: set[int] | None) -> tuple[Proc, Path]:
    """Start the load generator subprocess with `cfg`; return it and where it will write its results."""
    cfg_path = run_dir / "tmp" / f"{tag}.cfg.json"
    out_path = run_dir / "tmp" / f"{tag}.out.json"
    cfg_path.write_text(json.dumps(cfg | {"cpus": sorted(cpus) if cpus else None}))
    out_path.unlink(missing_ok=True)
    proc = spawn(
        f"loadgen-{tag}",
        [PY, "-m", "tests.bench.loadgen", str(cfg_path), str(out_path)],
        dict(os.environ),
        cpus,
        run_dir / "logs" / "loadgen.log",
    )
    return proc, out_path


class PgMeter:
    """CPU of the PostgreSQL backends serving one database, polled (backends come and go with the pool)."""

    def __init__(self, admin_url: str, datname: str) -> None:
        self.admin_url, self.datname = admin_url, datname
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.polled = False

    def poll(self) -> float:
        """Refresh; returns the CPU seconds the backends have used since each was first seen."""
        import psycopg

        try:
            with psycopg.connect(self.admin_url, connect_timeout=3) as conn:
                pids = [
                    r[0]
                    for r in conn.execute(
                        "SELECT pid FROM pg_stat_activity WHERE datname = %s", (self.datname,)
                    ).fetchall()
                ]
        except psycopg.Error:
            pids = list(self.last)
        for pid in pids:
            cpu = procstat.cpu_seconds([pid])
            # Backends there at the first poll count from then; later ones were born during the run.
            self.first.setdefault(pid, cpu if not self.polled else 0.0)
            self.last[pid] = cpu
        self.polled = True
        return sum(self.last[p] - self.first[p] for p in self.last)


def measure_cell(
    cell: Cell,
    load: LoadConfig,
    server: Proc,
    spec: ServerSpec,
    fake: Proc,
    timing: Timing,
    run_dir: Path,
    client_cpus: set[int] | None,
    profile: bool,
    pg_url: str | None = None,
) -> dict[str, Any]:
    """Run the closed loop against one server and compute every figure of one table row."""
    http_json(f"http://127.0.0.1:{fake.port}/_bench/config", dataclasses.asdict(load))
    http_json(f"http://127.0.0.1:{fake.port}/_bench/reset", {})
    tag = f"{cell.name}-{spec.label}"
    start_at = time.monotonic() + 1.0
    ramp = reply_seconds(load)  # stagger the workers' first streams over one reply
    warmup = max(timing.warmup, ramp + 0.5)
    cfg = {
        "host": "127.0.0.1",
        "port": server.port,
        "path": "/chatkit",
        "concurrency": cell.concurrency,
        "start_at": start_at,
        "warmup": warmup,
        "window": timing.window,
        "drain": timing.drain,
        "stream_timeout": timing.stream_timeout,
        "expected_text": load.text,
        "mode": "closed",
        "ramp": ramp,
        "protocol": server.protocol,
    }
    meter = procstat.TreeMeter(server.pid)
    fake_meter = procstat.TreeMeter(fake.pid)
    pg = PgMeter(pg_url, STREAM_DB) if spec.kind == "ours" and pg_url else None
    run_cpu0 = meter.sample().cpu  # the whole run too: every reply's full cost, ramp and drain included
    if pg:
        pg.poll()
    gen, out_path = run_loadgen(cfg, run_dir, tag, client_cpus)
    t0 = start_at + warmup
    while time.monotonic() < t0:
        if pg:
            pg.poll()
        time.sleep(min(0.25, max(0.0, t0 - time.monotonic())))
    meter.refresh()
    cpu0, fcpu0, gcpu0 = meter.sample().cpu, fake_meter.sample().cpu, procstat.cpu_seconds([gen.pid])
    per_worker0 = {pid: procstat.cpu_seconds([pid]) for pid in meter.workers()}
    busy0, self0 = procstat.machine_busy_seconds(), time.process_time()
    pg0 = pg.poll() if pg else 0.0
    t0 = time.monotonic()
    t1_target = t0 + timing.window
    rss_peak = 0
    spy = _start_profile(server, run_dir, tag, timing.window) if profile else None
    while (now := time.monotonic()) < t1_target:
        rss_peak = max(rss_peak, procstat.tree_rss(meter.workers()))
        if pg:
            pg.poll()
        time.sleep(min(0.25, max(0.0, t1_target - now)))
    cpu1, fcpu1, gcpu1 = meter.sample().cpu, fake_meter.sample().cpu, procstat.cpu_seconds([gen.pid])
    busy1, self1 = procstat.machine_busy_seconds(), time.process_time()
    pg1 = pg.poll() if pg else 0.0
    per_worker = [
        100 * (procstat.cpu_seconds([pid]) - c) / max(1e-9, time.monotonic() - t0) for pid, c in per_worker0.items()
    ]
    t1 = time.monotonic()
    rss_end = procstat.tree_rss(meter.workers())
    rss_peak = max(rss_peak, rss_end)
    deadline = time.monotonic() + timing.drain + 60
    while gen.popen.poll() is None and time.monotonic() < deadline:
        if pg:
            pg.poll()
        time.sleep(0.25)
    if gen.popen.poll() is None:
        gen.stop()
    time.sleep(0.5)  # the last replies' saves
    run_cpu1 = meter.sample().cpu
    pg_run = pg.poll() if pg else 0.0
    upstream_calls = http_json(f"http://127.0.0.1:{fake.port}/_bench/state")
    profile_path = _finish_profile(spy)
    if not out_path.exists():
        raise RuntimeError(f"load generator wrote nothing for {tag}; see {run_dir / 'logs' / 'loadgen.log'}")
    result = json.loads(out_path.read_text())
    streams = result["streams"]
    row = compute_row(streams, load, t0, t1, cpu1 - cpu0, start_at)
    lags = lag.read(server.lag_dir, t0, t1) if server.lag_dir else []
    row.update(
        lag_samples=len(lags),
        lag_p50_ms=_q(lags, 0.5),
        lag_p99_ms=_q(lags, 0.99),
        lag_max_ms=_q(lags, 1.0),
        stalls=lag.read_stalls(server.lag_dir) if STALLS and server.lag_dir else None,
        gc_pauses={
            str(gen): {"count": n, "total_ms": total * 1e3, "max_ms": longest * 1e3}
            for gen, (n, total, longest) in (lag.read_gc(server.lag_dir, t0, t1) if server.lag_dir else {}).items()
        },
    )
    # Whole-run accounting: CPU from before the first request to after the last reply, over everything delivered.
    done = [s for s in streams if not s["error"] and s["text_ok"]]
    chunks = sum(s["texts"] for s in streams)
    run_cpu = run_cpu1 - run_cpu0
    row.update(
        run_cpu_s=run_cpu,
        run_replies=len(done),
        run_chunks=chunks,
        cpu_ms_per_reply=run_cpu * 1e3 / len(done) if done else None,
        cpu_us_per_chunk=run_cpu * 1e6 / chunks if chunks else None,
        # Every server must ask the fake for the same work per reply, or the CPU figures compare unequal turns.
        upstream_calls={k: upstream_calls[k] for k in ("requests", "handoff_turns", "tool_turns", "text_turns")},
        upstream_calls_per_reply=upstream_calls["requests"] / len(done) if done else None,
        worker_cpu_pct=[round(v, 1) for v in per_worker],
        cpu_accounting="whole run" if not row["unfinished"] else "whole run (unfinished streams' work included)",
        db_cpu_pct=100 * (pg1 - pg0) / (t1 - t0) if pg else None,
        db_cpu_ms_per_reply=pg_run * 1e3 / len(done) if pg and done else None,
    )
    row.update(
        server=spec.label,
        cell=cell.name,
        concurrency=cell.concurrency,
        workers=cell.workers,
        tokens_per_chunk=cell.tokens_per_chunk,
        function_call=cell.function_call,
        rss_peak_mb=rss_peak / 2**20,
        rss_end_mb=rss_end / 2**20,
        server_processes=len(meter.pids),
        fake_cpu_pct=100 * (fcpu1 - fcpu0) / (t1 - t0),
        loadgen_cpu_pct=100 * (gcpu1 - gcpu0) / (t1 - t0),
        other_cpu_pct=100
        * ((busy1 - busy0) - (cpu1 - cpu0) - (fcpu1 - fcpu0) - (gcpu1 - gcpu0) - (self1 - self0) - (pg1 - pg0))
        / (t1 - t0),
        loadgen_cpu_total_s=result.get("loadgen_cpu_seconds"),
        profile=str(profile_path) if profile_path else None,
    )
    return row


def reply_seconds(load: LoadConfig) -> float:
    """How long one reply takes upstream alone."""
    return load.upstream_ttft + (load.chunks - 1) * load.chunk_gap


def compute_row(
    streams: list[dict[str, Any]], load: LoadConfig, t0: float, t1: float, cpu: float, start_at: float
) -> dict[str, Any]:
    """The figures of one run, from the per-stream records and the server CPU seconds spent in [t0, t1).

    Latency figures use the streams started in the window; when an overloaded server started none there (every
    worker still on its first reply), all streams of the run are used and `population` says so.
    """
    window = t1 - t0
    in_window = [s for s in streams if t0 <= s["sent"] < t1]
    population = "window"
    if not in_window:
        in_window, population = [s for s in streams if s["sent"] >= start_at], "all (none started in the window)"
    completed = [s for s in streams if t0 <= s["end"] < t1 and not s["error"] and s["text_ok"]]
    deltas = sum(1 for s in streams for a in s["arrivals"] if t0 <= a < t1)
    ok = [s for s in in_window if not s["error"]]
    ttft = [s["first_text"] - s["sent"] for s in ok if s["first_text"]]
    ttfb = [s["head"] - s["sent"] for s in ok if s["head"]]
    total = [s["end"] - s["sent"] for s in ok]
    gaps = [b - a for s in in_window for a, b in zip(s["arrivals"], s["arrivals"][1:], strict=False)]
    unfinished = [s for s in in_window if (s["error"] or "").startswith("unfinished")]
    errors = [s["error"] for s in in_window if s["error"] and not s["error"].startswith("unfinished")]
    mismatched = [s for s in in_window if not s["error"] and not s["text_ok"]]
    upstream = load.upstream_ttft
    ms = 1e3
    return {
        "window_s": window,
        "streams_started": len(in_window),
        "replies_completed": len(completed),
        "replies_per_s": len(completed) / window,
        "deltas": deltas,
        "deltas_per_s": deltas / window,
        "errors": len(errors),
        "error_kinds": sorted({e.split(":")[0] for e in errors})[:5],
        "unfinished": len(unfinished),
        "population": population,
        "text_mismatches": len(mismatched),
        "all_text_exact": not mismatched and not errors,
        "upstream_ttft_ms": upstream * ms,
        "upstream_gap_ms": load.chunk_gap * ms,
        "ttfb_p50_ms": _q(ttfb, 0.5),
        "ttft_p50_ms": _q(ttft, 0.5),
        "ttft_p99_ms": _q(ttft, 0.99),
        "added_ttft_p50_ms": _q([t - upstream for t in ttft], 0.5),
        "added_ttft_p99_ms": _q([t - upstream for t in ttft], 0.99),
        "gap_p50_ms": _q(gaps, 0.5),
        "gap_p99_ms": _q(gaps, 0.99),
        "gap_max_ms": _q(gaps, 1.0),
        "total_p50_ms": _q(total, 0.5),
        "total_p99_ms": _q(total, 0.99),
        "cpu_s": cpu,
        "cpu_pct": 100 * cpu / window,
        # Replies' worth of work delivered in the window (text events / events per reply): steadier than counting
        # the replies that happen to end inside it.
        "reply_equivalents": deltas / load.chunks,
        "cpu_ms_per_reply": cpu * ms / (deltas / load.chunks) if deltas else None,
        "cpu_us_per_chunk": cpu * 1e6 / deltas if deltas else None,
    }


def _q(values: list[float], q: float) -> float | None:
    v = quantile(values, q)
    return None if v is None else v * 1e3


def _start_profile(
    server: Proc, run_dir: Path, tag: str, seconds: float
) -> tuple[subprocess.Popen[bytes], Path] | None:
    candidates = [os.environ.get("PY_SPY"), shutil.which("py-spy"), str(Path(PY).parent / "py-spy")]
    spy = next((c for c in candidates if c and Path(c).exists()), None)
    if spy is None:
        log("  (py-spy not found on PATH, in the venv or in $PY_SPY: no profile)")
        return None
    pids = procstat.TreeMeter(server.pid).workers()
    out = run_dir / "profiles" / f"{tag}.txt"
    out.parent.mkdir(exist_ok=True)
    argv = [
        spy,
        "record",
        "-p",
        str(pids[0]),
        "-d",
        str(max(1, int(seconds))),
        "-r",
        os.environ.get("BENCH_PROFILE_RATE", "100"),
        "-f",
        "raw",
        "--full-filenames",
        "--threads",
        "--nonblocking",
        "-o",
        str(out),
    ]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), out


def _finish_profile(spy: tuple[subprocess.Popen[bytes], Path] | None) -> Path | None:
    if spy is None:
        return None
    proc, out = spy
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
    return out if out.exists() else None


# --------------------------------------------------------------------------------------------------------------------
# Idle streams
# --------------------------------------------------------------------------------------------------------------------


def warm_server(server: Proc, fake: Proc, run_dir: Path, client_cpus: set[int] | None, seconds: float = 4.0) -> None:
    """A few seconds of light traffic (8 streams, tool turn) so lazy imports and pools are in place."""
    load = LoadConfig(tokens=20, tokens_per_chunk=2, time_to_first_chunk=0.05)
    http_json(f"http://127.0.0.1:{fake.port}/_bench/config", dataclasses.asdict(load))
    cfg = {
        "host": "127.0.0.1",
        "port": server.port,
        "path": "/chatkit",
        "concurrency": 8,
        "start_at": time.monotonic() + 0.5,
        "warmup": 0.0,
        "window": seconds,
        "drain": 20.0,
        "ramp": 0.5,
        "stream_timeout": 30.0,
        "expected_text": load.text,
        "mode": "closed",
        "protocol": server.protocol,
    }
    gen, _ = run_loadgen(cfg, run_dir, f"warm-{server.name}", client_cpus)
    try:
        gen.popen.wait(seconds + 40)
    except subprocess.TimeoutExpired:
        gen.stop()


def measure_idle(
    server: Proc, spec: ServerSpec, fake: Proc, n: int, run_dir: Path, client_cpus: set[int] | None
) -> dict[str, Any]:
    """Hold streams open before their first token, in two stages of `n`; RSS per open stream from the growth.

    Headline: (RSS after 2n − RSS before) / 2n. Marginal: (RSS after 2n − RSS after n) / n, which leaves out
    whatever the first streams allocate once (pool connections, caches).
    """
    hold = LoadConfig(tokens=5, tokens_per_chunk=1, time_to_first_chunk=600.0, function_call=False)
    http_json(f"http://127.0.0.1:{fake.port}/_bench/config", dataclasses.asdict(hold))
    http_json(f"http://127.0.0.1:{fake.port}/_bench/reset", {})
    meter = procstat.TreeMeter(server.pid)
    workers = meter.workers()
    time.sleep(1.0)
    rss = [procstat.tree_rss(workers)]
    tag = f"idle-{spec.label}"
    ready, go = run_dir / "tmp" / f"{tag}.ready", run_dir / "tmp" / f"{tag}.go"
    cfg = {
        "host": "127.0.0.1",
        "port": server.port,
        "path": "/chatkit",
        "concurrency": 2 * n,
        "stages": [n, n],
        "mode": "idle",
        "stream_timeout": 120,
        "expected_text": hold.text,
        "ready_file": str(ready),
        "go_file": str(go),
        "hold": 60,
        "open_timeout": 60,
        "batch": 25,
    }
    gen, out_path = run_loadgen(cfg, run_dir, tag, client_cpus)
    upstream_open = []
    for stage in (0, 1):
        marker = Path(f"{ready}.{stage}")
        deadline = time.monotonic() + 90
        while not marker.exists() and time.monotonic() < deadline and gen.popen.poll() is None:
            time.sleep(0.1)
        time.sleep(1.5)  # let the last upstream requests settle
        upstream_open.append(http_json(f"http://127.0.0.1:{fake.port}/_bench/state")["active"])
        rss.append(procstat.tree_rss(workers))
        Path(f"{go}.{stage}").write_text("go")
    try:
        gen.popen.wait(60)
    except subprocess.TimeoutExpired:
        gen.stop()
    result = json.loads(out_path.read_text()) if out_path.exists() else {}
    opened = result.get("started", 0)
    time.sleep(2.0)  # the server saves the cancelled replies
    return {
        "server": spec.label,
        "workers": len(workers),
        "streams_requested": 2 * n,
        "streams_open": opened,
        "upstream_streams_open": upstream_open[-1],
        "rss_mb": [r / 2**20 for r in rss],
        "rss_before_mb": rss[0] / 2**20,
        "rss_after_mb": rss[-1] / 2**20,
        "rss_per_stream_kb": (rss[2] - rss[0]) / 1024 / opened if opened else None,
        "rss_per_stream_marginal_kb": (rss[2] - rss[1]) / 1024 / n if opened == 2 * n else None,
        "stages": result.get("stages"),
    }


# --------------------------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    return str(value)


def _errs(row: dict[str, Any]) -> str:
    text = str(row["errors"] + row["text_mismatches"])
    if row["unfinished"]:
        text += f" (+{row['unfinished']} unfinished)"
    if row["population"] != "window":
        text += " †"
    return text


def _pair(ours: Any, floor: Any, digits: int = 1, ratio: bool = True) -> str:
    text = f"{_fmt(ours, digits)} / {_fmt(floor, digits)}"
    if ratio and isinstance(ours, int | float) and isinstance(floor, int | float) and floor > 0:
        text += f" (**{ours / floor:.1f}×**)"
    return text


def build_report(
    meta: dict[str, Any],
    rows: list[dict[str, Any]],
    idle: list[dict[str, Any]],
    db: dict[str, Any] | None,
    profiles: dict[str, str],
) -> str:
    """The markdown report."""
    out = [f"# Chat backend benchmark — {meta['stamp']}", ""]
    if meta.get("failed"):
        out += [f"**The run stopped early: {meta['failed']}. Figures below are what was measured before.**", ""]
    load = meta["load"]
    out += [
        f"Mode: **{meta['mode']}**. Upstream (fake Gemini): {load['tokens']} tokens per reply, "
        f"{load['token_delay'] * 1e3:.0f} ms per token, time to first chunk {load['time_to_first_chunk'] * 1e3:.0f} ms "
        f"per upstream turn; `-tool` cells make every reply three upstream turns (the triage handoff, a `list_tasks` "
        f"call, then the text; every server offers the same team), "
        f"so the fake's own TTFT is {3 * load['time_to_first_chunk'] * 1e3:.0f} ms there. "
        f"Windows: warm-up {meta['timing']['warmup']} s, measured {meta['timing']['window']} s. "
        f"Server CPUs {meta['server_cpus']}, client (fake + load generator) CPUs {meta['client_cpus']} "
        f"(two workers use both cores, so they share one with the client). Machine: {meta['machine']}.",
        "",
        "Each cell is **ours / floor (ratio)**; the floor is the bare ASGI relay (`tests/bench/floor.py`) measured in "
        "the same run under the same load. *Added TTFT* = time to first `text` event minus the fake's own TTFT. "
        "*CPU %* is the server's CPU time (utime+stime of all uvicorn processes, from /proc) over the measured "
        "window (100% = one core). *CPU ms/reply* and *µs/chunk* account for the whole run instead — server CPU "
        "from before the first request to after the last reply, divided by the replies completed / text events "
        "delivered — so ramp, backlog and drain are all paid for (a window ratio breaks down under overload). "
        "*+ PostgreSQL* is the CPU of the database backends serving our server (the floor has no database), per "
        "reply, not included in the ratios. RSS = summed RSS of the serving "
        "processes (peak sampled in the window). Errors = failed streams plus streams whose final text differs "
        "from what the fake sent; *unfinished* streams were still running when the harness stopped waiting "
        "(overload); † marks cells where no stream started inside the window, so latency figures use every stream "
        "of the run.",
        "",
    ]
    variants = sorted({r["server"] for r in rows} - {"ours", "floor"})
    by_cell: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_cell.setdefault(r["cell"], {})[r["server"]] = r
    out += side_by_side(by_cell)
    header = (
        "| cell | added TTFT p50 ms | added TTFT p99 ms | gap p50 ms | gap p99 ms | deltas/s | CPU % | "
        "CPU ms/reply | CPU µs/chunk | RSS MB | errors | + PostgreSQL ms/reply |"
    )
    out += [header, "|" + "---|" * 12]
    for cell, servers in by_cell.items():
        for label in ["ours", *variants]:
            o, f = servers.get(label), servers.get("floor")
            if o is None or f is None:
                continue
            name = cell if label == "ours" else f"{cell} **[{label}]**"
            out.append(
                f"| {name} | {_pair(o['added_ttft_p50_ms'], f['added_ttft_p50_ms'])} | "
                f"{_pair(o['added_ttft_p99_ms'], f['added_ttft_p99_ms'])} | "
                f"{_pair(o['gap_p50_ms'], f['gap_p50_ms'])} | {_pair(o['gap_p99_ms'], f['gap_p99_ms'])} | "
                f"{_pair(o['deltas_per_s'], f['deltas_per_s'], 0)} | {_pair(o['cpu_pct'], f['cpu_pct'], 0)} | "
                f"{_pair(o['cpu_ms_per_reply'], f['cpu_ms_per_reply'], 2)} | "
                f"{_pair(o['cpu_us_per_chunk'], f['cpu_us_per_chunk'], 0)} | "
                f"{_pair(o['rss_peak_mb'], f['rss_peak_mb'], 0)} | "
                f"{_errs(o)} / {_errs(f)} | {_fmt(o.get('db_cpu_ms_per_reply'), 2)} |"
            )
    out += [
        "",
        "Secondary figures (ours / floor): upstream gap, replies completed per second, TTFB p50 (response "
        "head), total reply time p50/p99, streams started in the window, the client side's CPU (must stay "
        "well under 100% for the numbers to be the server's), and the CPU used by *other* processes on the "
        "machine in the window, PostgreSQL's backends for our server excluded (other sessions' tests: 200% = "
        "both cores taken; latency figures of a cell with a high value are noise-inflated, CPU-time figures "
        "less so), and PostgreSQL's CPU % for our server.",
        "",
        "| cell | server | upstream gap ms | replies/s | TTFB p50 ms | total p50 ms | total p99 ms | streams | "
        "fake CPU % | loadgen CPU % | other processes CPU % | PostgreSQL CPU % | CPU % per worker | error kinds |",
        "|" + "---|" * 14,
    ]
    for r in rows:
        out.append(
            f"| {r['cell']} | {r['server']} | {_fmt(r['upstream_gap_ms'])} | {_fmt(r['replies_per_s'])} | "
            f"{_fmt(r['ttfb_p50_ms'])} | {_fmt(r['total_p50_ms'])} | {_fmt(r['total_p99_ms'])} | "
            f"{r['streams_started']} | {_fmt(r['fake_cpu_pct'], 0)} | {_fmt(r['loadgen_cpu_pct'], 0)} | "
            f"{_fmt(r['other_cpu_pct'], 0)} | {_fmt(r.get('db_cpu_pct'), 0)} | "
            f"{' + '.join(_fmt(v, 0) for v in r.get('worker_cpu_pct') or [])} | "
            f"{', '.join(r['error_kinds']) or '–'} |"
        )
    if idle:
        out += [
            "",
            "## Memory per open idle stream",
            "",
            "Streams opened (in two batches of N, after a short warm-up) against a fake whose first chunk never "
            "comes in time: each stream has sent `start` and holds an open upstream request. RSS of the serving "
            "processes before, after N and after 2N streams.",
            "",
            "| server | workers | streams open | upstream open | RSS before / after N / after 2N MB | "
            "RSS per stream KB (2N) | marginal KB (2nd N) |",
            "|---|---|---|---|---|---|---|",
        ]
        for i in idle:
            out.append(
                f"| {i['server']} | {i['workers']} | {i['streams_open']}/{i['streams_requested']} | "
                f"{i['upstream_streams_open']} | {' / '.join(_fmt(v) for v in i['rss_mb'])} | "
                f"{_fmt(i['rss_per_stream_kb'])} | {_fmt(i['rss_per_stream_marginal_kb'])} |"
            )
    out += ["", "## Targets", ""] + [f"- {t}" for t in targets(rows, idle)]
    if db:
        seconds = db["dataset"]["seconds"]
        loaded = "reused" if db["dataset"]["reused"] else f"loaded in {seconds:.0f} s"
        out += [
            "",
            "## Database path (PostgreSQL, one user with 100,000 conversations / 1,000,000 messages)",
            "",
            f"Dataset: {loaded}. "
            f"Sequential requests through our server (1 worker), {db['repeats']} each after 5 warm-ups.",
            "",
            "| request | p50 ms | p90 ms | p99 ms | max ms | bytes | status |",
            "|---|---|---|---|---|---|---|",
        ]
        for label, s in db["http"].items():
            out.append(
                f"| {label} | {_fmt(s['p50_ms'], 2)} | {_fmt(s['p90_ms'], 2)} | {_fmt(s['p99_ms'], 2)} | "
                f"{_fmt(s['max_ms'], 2)} | {s['bytes']} | {s['statuses']} |"
            )
        for variant, http in db.get("variants", {}).items():
            for label, s in http.items():
                out.append(
                    f"| {label} **[{variant}]** | {_fmt(s['p50_ms'], 2)} | {_fmt(s['p90_ms'], 2)} | "
                    f"{_fmt(s['p99_ms'], 2)} | {_fmt(s['max_ms'], 2)} | {s['bytes']} | {s['statuses']} |"
                )
        out += ["", "### Plans (EXPLAIN (ANALYZE, BUFFERS) of the exact SQL the service layer sends)", ""]
        for label, plan in db["plans"].items():
            out += [f"**{label}**", "", "```", plan, "```", ""]
    if profiles:
        out += ["", "## Profiles (py-spy, one worker, during the measured window)", ""]
        for tag, text in profiles.items():
            out += [f"### {tag}", "", text, ""]
    return "\n".join(out) + "\n"


def _ratio(a: Any, b: Any) -> str:
    if isinstance(a, int | float) and isinstance(b, int | float) and b > 0:
        return f"{a / b:.2f}×"
    return "–"


def _gc_cell(pauses: dict[str, dict[str, float]]) -> str:
    if not pauses:
        return "–"
    count = sum(int(p["count"]) for p in pauses.values())
    longest = max(p["max_ms"] for p in pauses.values())
    return f"{count} ({int(pauses.get('2', {}).get('count', 0))}) / {longest:.1f}"


def _own(row: dict[str, Any], sdk: dict[str, Any]) -> str:
    """A server's CPU per reply above the SDK floor's (its own work: HTTP, protocol, storage)."""
    mine, floor = row.get("cpu_ms_per_reply"), sdk.get("cpu_ms_per_reply")
    return _fmt(mine - floor, 2) if mine is not None and floor is not None else "–"


FLOORS = ("sdk", "sdk-ours", "floor")


def side_by_side(by_cell: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """The headline table: every server of a cell on its own row, with ratios to the ChatKit peer and the floor."""
    out = [
        "## Side by side (same run)",
        "",
        "CPU per reply / per delta: whole-run server CPU (PostgreSQL's own CPU excluded) over replies completed / "
        "text deltas delivered. *Loop lag*: how late a 10 ms sleep inside each server process woke up, sampled all "
        "through the measured window (`tests/bench/lag.py`). *GC pauses*: garbage collections in the window "
        "(of which generation 2) and the longest pause. *Replies*: completed inside the window, and "
        "(unfinished) streams still running when the harness stopped waiting. *Upstream calls/reply*: requests the "
        "fake served over replies completed in the whole run (the same turn shape for every server: about 3 with "
        "a tool turn, 1 without; a little above while streams cut at the end of the run had started their calls).",
        "",
        "*sdk* is the SDK floor (`tests/bench/sdk_floor.py`): `Runner.run_streamed` on the same team and fake with no "
        "server work around it, with the SDK's `LitellmModel` (what the ChatKit peer runs); *sdk-ours* is the same "
        "floor on our model (`backend/chat/litellm_model.py`, what this backend runs); *own* is a server's CPU above "
        "the floor of its model.",
        "",
        "| cell | server | CPU ms/reply | vs ChatKit | vs floor | own ms/reply | CPU µs/delta | vs ChatKit | "
        "vs floor | added TTFT p50 / p99 ms | loop lag p50 / p99 / max ms | GC pauses (gen 2) / longest ms | "
        "replies (unfinished) | errors | upstream calls/reply |",
        "|" + "---|" * 15,
    ]
    others = set().union(*by_cell.values()) - {"ours", "chatkit", "sdk", "sdk-ours", "floor"}
    order = ["ours", *sorted(others), "chatkit", "sdk-ours", "sdk", "floor"]
    for cell, servers in by_cell.items():
        peer, floor, sdk = servers.get("chatkit") or {}, servers.get("floor") or {}, servers.get("sdk") or {}
        sdk_ours = servers.get("sdk-ours") or sdk
        for label in order:
            r = servers.get(label)
            if r is None:
                continue
            out.append(
                f"| {cell} | {label} | {_fmt(r['cpu_ms_per_reply'], 2)} | "
                f"{_ratio(r['cpu_ms_per_reply'], peer.get('cpu_ms_per_reply'))} | "
                f"{_ratio(r['cpu_ms_per_reply'], floor.get('cpu_ms_per_reply'))} | "
                f"{_own(r, sdk if label == 'chatkit' else sdk_ours) if label not in FLOORS else '–'} | "
                f"{_fmt(r['cpu_us_per_chunk'], 0)} | {_ratio(r['cpu_us_per_chunk'], peer.get('cpu_us_per_chunk'))} | "
                f"{_ratio(r['cpu_us_per_chunk'], floor.get('cpu_us_per_chunk'))} | "
                f"{_fmt(r['added_ttft_p50_ms'])} / {_fmt(r['added_ttft_p99_ms'])} | "
                f"{_fmt(r.get('lag_p50_ms'))} / {_fmt(r.get('lag_p99_ms'))} / {_fmt(r.get('lag_max_ms'))} | "
                f"{_gc_cell(r.get('gc_pauses') or {})} | "
                f"{r['replies_completed']} ({r['unfinished']}) | {r['errors'] + r['text_mismatches']} | "
                f"{_fmt(r.get('upstream_calls_per_reply'), 2)} |"
            )
    return [*out, ""]


def targets(rows: list[dict[str, Any]], idle: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, each with where we stand in this run."""
    found = {(r["cell"], r["server"]): r for r in rows}
    lines = []

    def pick(pred: Any) -> list[str]:
        return sorted({r["cell"] for r in rows if pred(r)})

    for cell in pick(lambda r: r["tokens_per_chunk"] == 10 and r["function_call"]):
        o, f = found.get((cell, "ours")), found.get((cell, "floor"))
        if o and f and o["cpu_ms_per_reply"] and f["cpu_ms_per_reply"]:
            ratio = o["cpu_ms_per_reply"] / f["cpu_ms_per_reply"]
            db = o.get("db_cpu_ms_per_reply") or 0.0
            lines.append(
                f"CPU per reply ≤ 3× floor at 10 tokens/chunk with a tool turn — {cell}: "
                f"{o['cpu_ms_per_reply']:.2f} vs {f['cpu_ms_per_reply']:.2f} ms = {ratio:.1f}× "
                f"→ **{'met' if ratio <= 3 else 'NOT met'}** (with PostgreSQL's {db:.1f} ms: "
                f"{(o['cpu_ms_per_reply'] + db) / f['cpu_ms_per_reply']:.1f}×)"
            )
    for cell in pick(lambda r: r["concurrency"] == 200 and r["workers"] == 2):
        o = found.get((cell, "ours"))
        if not o:
            continue
        ttft_ok = o["added_ttft_p99_ms"] is not None and o["added_ttft_p99_ms"] < 250
        gap_limit = 1.5 * o["upstream_gap_ms"]
        gap_ok = o["gap_p99_ms"] is not None and o["gap_p99_ms"] < gap_limit
        err_ok = o["errors"] == 0 and o["text_mismatches"] == 0 and o["unfinished"] == 0
        lines.append(
            f"200 streams, 2 workers — {cell}: added TTFT p99 {_fmt(o['added_ttft_p99_ms'])} ms (< 250: "
            f"**{'met' if ttft_ok else 'NOT met'}**); gap p99 {_fmt(o['gap_p99_ms'])} ms vs 1.5 × "
            f"{o['upstream_gap_ms']:.0f} = {gap_limit:.0f} ms (**{'met' if gap_ok else 'NOT met'}**); errors "
            f"{o['errors']}, unfinished {o['unfinished']}, text mismatches {o['text_mismatches']} "
            f"(**{'met' if err_ok else 'NOT met'}**)"
        )
    for cell in pick(lambda r: r["tokens_per_chunk"] == 1):
        o, f = found.get((cell, "ours")), found.get((cell, "floor"))
        if o and f and o["cpu_us_per_chunk"] and f["cpu_us_per_chunk"]:
            ratio = o["cpu_us_per_chunk"] / f["cpu_us_per_chunk"]
            lines.append(
                f"CPU per chunk ≤ 4× floor at 1 token/chunk — {cell}: {o['cpu_us_per_chunk']:.0f} vs "
                f"{f['cpu_us_per_chunk']:.0f} µs = {ratio:.1f}× → **{'met' if ratio <= 4 else 'NOT met'}**"
            )
    for cell in pick(lambda r: r["concurrency"] == 50 and r["workers"] == 1):
        o, p = found.get((cell, "ours")), found.get((cell, "chatkit"))
        if not o:
            continue
        key, unit = ("cpu_ms_per_reply", "ms/reply") if o["tokens_per_chunk"] > 1 else ("cpu_us_per_chunk", "µs/delta")
        if p and o[key] and p[key]:
            ratio = o[key] / p[key]
            lines.append(
                f"CPU ≤ 0.8× the ChatKit peer — {cell}: {o[key]:.2f} vs {p[key]:.2f} {unit} = {ratio:.2f}× "
                f"→ **{'met' if ratio <= 0.8 else 'NOT met'}**"
            )
            s, so = found.get((cell, "sdk")), found.get((cell, "sdk-ours"))
            if s and s[key]:
                lines.append(
                    f"↳ of which the SDK floor (Agents SDK + LitellmModel alone, what the peer pays): {s[key]:.2f} "
                    f"{unit} ({s[key] / p[key]:.2f}× the peer's total); ChatKit's own share above it "
                    f"{p[key] - s[key]:.2f} {unit}"
                )
            if so and so[key]:
                ratio_floor = f" ({so[key] / s[key]:.2f}× the SDK floor)" if s and s[key] else ""
                lines.append(
                    f"↳ the SDK floor on our model (what ours pays): {so[key]:.2f} {unit}{ratio_floor}; our own "
                    f"share above it {o[key] - so[key]:.2f} {unit}"
                )
        p50, p99, lag99 = o["added_ttft_p50_ms"], o["added_ttft_p99_ms"], o.get("lag_p99_ms")
        delivered = o["errors"] == 0 and o["text_mismatches"] == 0 and o["unfinished"] == 0
        lines.append(
            f"50 streams, 1 worker — {cell}: added TTFT p50 {_fmt(p50)} ms (< 50: "
            f"**{'met' if p50 is not None and p50 < 50 else 'NOT met'}**), p99 {_fmt(p99)} ms (< 250: "
            f"**{'met' if p99 is not None and p99 < 250 else 'NOT met'}**); loop lag p99 {_fmt(lag99)} ms (< 20: "
            f"**{'met' if lag99 is not None and lag99 < 20 else 'NOT met'}**); every reply delivered: "
            f"**{'met' if delivered else 'NOT met'}**"
        )
    for i in idle:
        if i["server"] not in ("floor", "chatkit") and i["rss_per_stream_kb"] is not None:
            lines.append(
                f"RSS per open idle stream < 100 KB — {i['server']}: {i['rss_per_stream_kb']:.0f} KB → "
                f"**{'met' if i['rss_per_stream_kb'] < 100 else 'NOT met'}**"
            )
    return lines


# --------------------------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------------------------


def plan_cells(quick: bool) -> list[Cell]:
    """The cells of a run, grouped by worker count (each group shares one server start)."""
    if quick:
        return [Cell(1, 1, 10, True), Cell(50, 1, 10, True), Cell(200, 2, 10, True), Cell(200, 2, 1, False)]
    cells = []
    for concurrency, workers in [(1, 1), (50, 1), (200, 1), (200, 2)]:
        cells += [Cell(concurrency, workers, 10, True), Cell(concurrency, workers, 1, False)]
    return cells


def parse_cell(name: str) -> Cell:
    """``c50-w1-t10-tool`` → Cell(50, 1, 10, True)."""
    import re

    m = re.fullmatch(r"c(\d+)-w(\d+)-t(\d+)(-tool)?", name.strip())
    if m is None:
        raise SystemExit(f"--cells wants names like c50-w1-t10-tool or c200-w2-t1, got {name!r}")
    return Cell(int(m[1]), int(m[2]), int(m[3]), bool(m[4]))


def parse_variants(values: list[str]) -> list[ServerSpec]:
    """`NAME=TWEAK,TWEAK` options into server specs."""
    specs = []
    for value in values:
        name, _, tweaks = value.partition("=")
        if not name or not tweaks:
            raise SystemExit(f"--variant wants NAME=TWEAKS, got {value!r}")
        specs.append(ServerSpec(name, "ours", tweaks))
    return specs


def parse_trees(values: list[str]) -> list[ServerSpec]:
    """`NAME=PATH` options (another checkout, e.g. a `git worktree` of an earlier commit) into server specs."""
    specs = []
    for value in values:
        name, _, path = value.partition("=")
        root = Path(path).resolve()
        if not name or not (root / "backend" / "__main__.py").is_file():
            raise SystemExit(f"--tree wants NAME=PATH of a checkout with backend/, got {value!r}")
        specs.append(ServerSpec(name, "ours", root=root))
    return specs


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer cells, shorter windows (~3 min)")
    parser.add_argument("--only", action="append", default=[], help="run only cells whose name contains this")
    parser.add_argument("--cells", help="run exactly these cells, e.g. c20-w1-t10-tool,c20-w1-t1")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="also run tests.bench.server with tweaks: NAME=TWEAK[,TWEAK] (see tests/bench/server.py)",
    )
    parser.add_argument(
        "--tree",
        action="append",
        default=[],
        help="also run our server from another checkout: NAME=PATH (e.g. a git worktree of the commit before a change)",
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip plain `python -m backend` (variants only)")
    parser.add_argument("--no-floor", action="store_true", help="skip the floor relay")
    parser.add_argument("--no-chatkit", action="store_true", help="skip the ChatKit peer (ChatKitServer on FastAPI)")
    parser.add_argument("--no-sdk", action="store_true", help="skip the SDK floor (the Agents SDK run alone)")
    parser.add_argument("--no-idle", action="store_true")
    parser.add_argument("--no-db", action="store_true")
    parser.add_argument("--db-only", action="store_true", help="only the database path (with any --variant)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy each of our servers' cells (needs py-spy on PATH, in the venv, or $PY_SPY)",
    )
    parser.add_argument("--tokens", type=int, default=100, help="tokens per reply")
    parser.add_argument("--token-delay-ms", type=float, default=20.0)
    parser.add_argument("--ttfc-ms", type=float, default=200.0, help="fake's time to first chunk per upstream turn")
    parser.add_argument("--warmup", type=float)
    parser.add_argument("--window", type=float)
    parser.add_argument("--idle-streams", type=int, help="streams per idle batch (two batches)")
    parser.add_argument("--db-repeats", type=int)
    parser.add_argument("--log-level", default="INFO", help="LOG_LEVEL of our server (default INFO, as shipped)")
    parser.add_argument("--server-cpus", default="0")
    parser.add_argument("--client-cpus", default="1")
    parser.add_argument("--pg", default=os.environ.get("BENCH_PG", DEFAULT_PG), help="a postgresql:// URL (server)")
    args = parser.parse_args(argv)

    quick = args.quick
    timing = Timing(
        warmup=args.warmup or (2.0 if quick else 3.0),
        window=args.window or (6.0 if quick else 10.0),
        drain=20.0 if quick else 30.0,
        stream_timeout=45.0,
    )
    server_cpus = {int(c) for c in args.server_cpus.split(",") if c}
    client_cpus = {int(c) for c in args.client_cpus.split(",") if c}
    ncpu = os.cpu_count() or 1
    if max(server_cpus | client_cpus) >= ncpu:
        server_cpus, client_cpus = set(), set()
    base = LoadConfig(tokens=args.tokens, token_delay=args.token_delay_ms / 1e3, time_to_first_chunk=args.ttfc_ms / 1e3)
    if args.db_only:
        cells, args.no_idle, args.no_db = [], True, False
    elif args.cells:
        cells = [parse_cell(name) for name in args.cells.split(",") if name]
    else:
        cells = [c for c in plan_cells(quick) if not args.only or any(o in c.name for o in args.only)]
    specs = (
        ([] if args.no_baseline else [ServerSpec("ours", "ours")])
        + parse_variants(args.variant)
        + parse_trees(args.tree)
    )
    if not args.no_chatkit:
        ensure_bench_group()
        specs.append(ServerSpec("chatkit", "chatkit"))
    if not args.no_sdk:
        ensure_bench_group()  # it runs the peer's mirror of our team
        specs.append(ServerSpec("sdk-ours", "sdk-ours"))
        specs.append(ServerSpec("sdk", "sdk"))
    if not args.no_floor:
        specs.append(ServerSpec("floor", "floor"))

    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = RESULTS / stamp
    for sub in ("logs", "tmp"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    latest = RESULTS / "latest"
    with contextlib.suppress(OSError):
        latest.unlink(missing_ok=True)
        latest.symlink_to(stamp)
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, client_cpus or set(range(ncpu)))
    meta = {
        "stamp": stamp,
        "mode": "quick" if quick else "full",
        "timing": dataclasses.asdict(timing),
        "load": dataclasses.asdict(base),
        "server_cpus": sorted(server_cpus),
        "client_cpus": sorted(client_cpus),
        "machine": f"{ncpu} CPUs, {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB, "
        f"load average at start {os.getloadavg()[0]:.2f}",
        "argv": sys.argv[1:],
        "git": _git_head(),
    }
    log(f"bench run {stamp}: {len(cells)} cells x {len(specs)} servers -> {run_dir}")
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    idle: list[dict[str, Any]] = []
    db: dict[str, Any] | None = None
    profiles: dict[str, str] = {}
    procs: list[Proc] = []
    from tests.bench.dbpath import admin_url, recreate_database

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)

    stream_db = args.pg.rsplit("/", 1)[0] + f"/{STREAM_DB}"
    try:
        recreate_database(args.pg, STREAM_DB)
        fake = start_fake(run_dir, client_cpus)
        procs.append(fake)
        for workers in sorted({c.workers for c in cells} | ({1} if not args.no_idle else set())):
            group = [c for c in cells if c.workers == workers]
            do_idle = not args.no_idle and workers == 1
            if not group and not do_idle:
                continue
            cpus = server_cpus if workers == 1 else set()
            n_idle = args.idle_streams or (50 if quick else 100)
            ours_specs = [spec for spec in specs if spec.kind == "ours"]
            # The peers without a database (the ChatKit peer, the floor) run through the whole group.
            peers: list[tuple[Proc, ServerSpec]] = []
            for peer_spec in [spec for spec in specs if spec.kind != "ours"]:
                log(f"[{time.monotonic() - started:5.0f}s] starting {peer_spec.label} with {workers} worker(s)")
                peer = start_server(peer_spec, workers, run_dir, fake.port, cpus, stream_db, args.log_level, procs)
                warm_server(peer, fake, run_dir, client_cpus)
                peers.append((peer, peer_spec))
            # One of our servers at a time (each may hold 30 PostgreSQL connections per worker); the peers' rows
            # are measured right after the first one's, cell by cell, so each row of a cell shares the same moment.
            for index, spec in enumerate(ours_specs or [None]):  # type: ignore[list-item]
                server: Proc | None = None
                if spec is not None:
                    recreate_database(args.pg, STREAM_DB)  # each on an empty one (an older tree lacks newer schema)
                    log(f"[{time.monotonic() - started:5.0f}s] starting {spec.label} with {workers} worker(s)")
                    server = start_server(spec, workers, run_dir, fake.port, cpus, stream_db, args.log_level, procs)
                    warm_server(server, fake, run_dir, client_cpus)
                pairs = [(server, spec), *(peers if index == 0 else [])]
                if do_idle:
                    for proc, sp in pairs:
                        if proc is not None and sp is not None:
                            log(f"[{time.monotonic() - started:5.0f}s] idle streams: 2 x {n_idle} on {sp.label}")
                            idle.append(measure_idle(proc, sp, fake, n_idle, run_dir, client_cpus))
                for cell in group:
                    load = dataclasses.replace(
                        base, tokens_per_chunk=cell.tokens_per_chunk, function_call=cell.function_call
                    )
                    for proc, sp in pairs:
                        if proc is None or sp is None:
                            continue
                        others = [p for p, _ in [(server, spec), *peers] if p is not None and p is not proc]
                        waited = wait_quiet(others)
                        log(
                            f"[{time.monotonic() - started:5.0f}s] {cell.name} on {sp.label}"
                            f" (waited {waited:.1f} s for the other servers to go idle)"
                        )
                        row = measure_cell(
                            cell,
                            load,
                            proc,
                            sp,
                            fake,
                            timing,
                            run_dir,
                            client_cpus,
                            args.profile and sp.kind in ("ours", "chatkit"),
                            admin_url(args.pg),
                        )
                        rows.append(row)
                        log(f"        workers CPU % {row['worker_cpu_pct']}, TTFB p50 {_fmt(row['ttfb_p50_ms'])} ms")
                        log(
                            f"        added TTFT p50/p99 {_fmt(row['added_ttft_p50_ms'])}/"
                            f"{_fmt(row['added_ttft_p99_ms'])} ms, gap p99 {_fmt(row['gap_p99_ms'])} ms, "
                            f"CPU {_fmt(row['cpu_pct'], 0)}%, {_fmt(row['cpu_ms_per_reply'], 2)} ms/reply, "
                            f"{_fmt(row['cpu_us_per_chunk'], 0)} µs/chunk, errors {row['errors']}+"
                            f"{row['text_mismatches']}, other load {_fmt(row['other_cpu_pct'], 0)}%, "
                            f"loop lag p99 {_fmt(row['lag_p99_ms'])} ms"
                        )
                        if row["profile"]:
                            from tests.bench.profile_summary import summarise

                            profiles[f"{cell.name} {sp.label}"] = summarise(Path(row["profile"]), 20)[0]
                if server is not None:
                    server.stop()
            for peer, _ in peers:
                peer.stop()
        if not args.no_db:
            db = run_db_path(args, run_dir, fake, server_cpus, specs, started, procs)
    except BaseException as error:
        meta["failed"] = f"{type(error).__name__}: {error}"
        log(f"run failed: {meta['failed']} (writing what was measured)")
        raise
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave servers behind
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for proc in reversed(procs):
            proc.stop()
        shutil.rmtree(run_dir / "tmp", ignore_errors=True)
        meta["seconds"] = time.monotonic() - started
        (run_dir / "results.json").write_text(
            json.dumps({"meta": meta, "rows": rows, "idle": idle, "db": db}, indent=1, default=str)
        )
        report = build_report(meta, rows, idle, db, profiles)
        (run_dir / "report.md").write_text(report)
        log(f"done in {meta['seconds']:.0f} s: {run_dir / 'report.md'}")
    print(report)  # noqa: T201
    return 0


def ensure_bench_group() -> None:
    """Install the bench-only dependency group (the ChatKit peer's packages) into this venv if it is missing.

    `uv sync --locked --group bench --inexact`: only when the bench runs, never for tests or CI (whose plain
    `uv sync --locked` removes the group again).
    """
    import importlib.util

    if importlib.util.find_spec("chatkit") and importlib.util.find_spec("fastapi"):
        return
    candidates = [os.environ.get("UV"), shutil.which("uv"), str(ROOT / ".tools" / "bin" / "uv")]
    uv = next((c for c in candidates if c and Path(c).exists()), None)
    if uv is None:
        raise SystemExit("the ChatKit peer needs `uv sync --group bench` (uv not found; or pass --no-chatkit)")
    log("installing the bench dependency group (uv sync --locked --group bench --inexact)")
    subprocess.run([uv, "sync", "--locked", "--group", "bench", "--inexact", "--quiet"], cwd=ROOT, check=True)


def run_db_path(
    args: argparse.Namespace,
    run_dir: Path,
    fake: Proc,
    server_cpus: set[int],
    specs: list[ServerSpec],
    started: float,
    procs: list[Proc],
) -> dict[str, Any]:
    """Seed (or reuse) the big dataset, time the reads through our server, and EXPLAIN the service's SQL."""
    from tests.bench import dbpath

    log(f"[{time.monotonic() - started:5.0f}s] database path")
    dataset = dbpath.ensure_dataset(args.pg, DATASET_DB, log=log)
    url = args.pg.rsplit("/", 1)[0] + f"/{DATASET_DB}"
    cursor, conversation_id = dbpath.deep_cursor(url)
    repeats = args.db_repeats or (50 if args.quick else 200)
    out: dict[str, Any] = {"dataset": dataset, "repeats": repeats, "variants": {}}
    for spec in [s for s in specs if s.kind == "ours"]:
        proc = start_server(spec, 1, run_dir, fake.port, server_cpus, url, args.log_level, procs)
        try:
            http = dbpath.measure_http(f"http://127.0.0.1:{proc.port}", cursor, conversation_id, repeats)
        finally:
            proc.stop()
        if spec.label == "ours":
            out["http"] = http
        else:
            out["variants"][spec.label] = http
    if "http" not in out:  # --no-baseline: show the first variant as the main figures
        first = next(iter(out["variants"]))
        out["http"] = out["variants"].pop(first)
    from backend.settings import normalize_database_url

    out["plans"] = dbpath.run_explain(normalize_database_url(url), cursor, conversation_id)
    return out


def _git_head() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "backend"], cwd=ROOT, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        return head + (" (backend/ modified)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "?"


if __name__ == "__main__":
    sys.exit(main())
