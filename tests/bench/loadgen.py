"""A cheap SSE load generator: N closed-loop workers on raw asyncio protocols (uvloop), parsing as bytes arrive.

Each worker keeps one keep-alive HTTP/1.1 connection and posts ``POST /chatkit {"message": ...}`` (a new
conversation every time, so the per-conversation run lock never answers 409), reads the chunked SSE body, and
records per stream: time to the response head, to the first byte of the body, to the first ``text`` event, every
gap between ``text`` events, the total time, the error if any, and whether the joined text equals the expected one.

Run as a subprocess by `tests.bench.run`: ``python -m tests.bench.loadgen CONFIG.json OUT.json`` where CONFIG holds
``host, port, path, concurrency, start_at, warmup, window, drain, stream_timeout, expected_text, mode, cpus``
(``start_at`` is a ``time.monotonic()`` value: CLOCK_MONOTONIC is shared by all processes on Linux). ``mode`` is
``"closed"`` (the closed loop; workers start spread over ``ramp`` seconds) or ``"idle"`` (open streams in
``stages``, report when every one has seen its ``start`` event, hold them; see `idle`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

now = time.monotonic  # CLOCK_MONOTONIC, the same clock the orchestrator samples with


@dataclass(slots=True)
class Stream:
    """What one stream saw. Times are monotonic seconds."""

    sent: float = 0.0
    head: float = 0.0  # response status line received
    first_body: float = 0.0
    first_text: float = 0.0
    end: float = 0.0
    status: int = 0
    error: str | None = None
    text_ok: bool = False
    texts: int = 0
    events: int = 0
    arrivals: array = field(default_factory=lambda: array("d"))  # arrival time of every text event
    done: bool = False


class _Conn(asyncio.Protocol):
    """One HTTP/1.1 connection that runs one streamed request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self.stream: Stream | None = None
        self.finished: asyncio.Future[None] | None = None
        self.complete: asyncio.Future[None] | None = None
        self.parts: list[str] = []
        self.on_start: Any = None

    # --- protocol callbacks ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if self.stream is not None and not self.stream.done:
            self._fail("connection closed before [DONE]")
        self._complete()

    def data_received(self, data: bytes) -> None:
        t = now()
        if self.stream is None:
            return
        self.buf += data
        try:
            self._parse(t)
        except Exception as e:
            self._fail(f"parse error: {e!r}")
            self._complete()

    # --- request ---

    def request(self, raw: bytes, on_start: Any = None) -> tuple[Stream, asyncio.Future[None]]:
        loop = asyncio.get_running_loop()
        self.stream = Stream()
        self.finished = loop.create_future()  # [DONE] seen, or the stream failed
        self.complete = loop.create_future()  # the whole HTTP response was read: the connection is reusable
        self.buf = b""
        self.state = "head"
        self.chunk_state = "size"
        self.chunk_left = 0
        self.body = b""
        self.sse = b""
        self.parts = []
        self.chunked = False
        self.content_length = -1
        self.on_start = on_start
        self.stream.sent = now()
        assert self.transport is not None
        self.transport.write(raw)
        return self.stream, self.finished

    def _fail(self, reason: str) -> None:
        s = self.stream
        if s is None or s.done:
            return
        s.error = s.error or reason
        self._finish(now())

    def _finish(self, t: float) -> None:
        s = self.stream
        assert s is not None
        s.end = t
        s.done = True
        if self.finished is not None and not self.finished.done():
            self.finished.set_result(None)

    def _complete(self) -> None:
        if self.complete is not None and not self.complete.done():
            self.complete.set_result(None)

    # --- parsing ---

    def _parse(self, t: float) -> None:
        s = self.stream
        assert s is not None
        if self.state == "head":
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buf = self.buf[:end].decode("latin-1"), self.buf[end + 4 :]
            lines = head.split("\r\n")
            s.status = int(lines[0].split(" ", 2)[1])
            s.head = t
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "transfer-encoding" and "chunked" in value.lower():
                    self.chunked = True
                elif name == "content-length":
                    self.content_length = int(value.strip())
            self.state = "body"
        if not self.buf:
            return
        if not s.first_body:
            s.first_body = t
        if not self.chunked:  # an error answer with a content length
            self.body += self.buf
            self.buf = b""
            if self.content_length >= 0 and len(self.body) >= self.content_length:
                if not s.done:
                    s.error = s.error or f"HTTP {s.status}: {self.body[:200]!r}"
                    self._finish(t)
                self._complete()
            return
        while self.buf:
            if self.chunk_state == "size":
                line_end = self.buf.find(b"\r\n")
                if line_end < 0:
                    return
                size = int(self.buf[:line_end].split(b";", 1)[0], 16)
                self.buf = self.buf[line_end + 2 :]
                if size == 0:  # the last chunk (no trailers are sent)
                    if not s.done and PROTOCOL["name"] == "chatkit" and s.status == 200 and s.texts:
                        self._finish(t)  # ChatKit ends its stream with the body, not with a [DONE] event
                    if not s.done:
                        s.error = s.error or (f"HTTP {s.status}" if s.status != 200 else "body ended before [DONE]")
                        self._finish(t)
                    self._complete()
                    return
                self.chunk_left = size
                self.chunk_state = "data"
            elif self.chunk_state == "data":
                take = self.buf[: self.chunk_left]
                self.buf = self.buf[len(take) :]
                self.chunk_left -= len(take)
                if not s.done:
                    self._feed_sse(take, t)
                if self.chunk_left == 0:
                    self.chunk_state = "crlf"
            else:
                if len(self.buf) < 2:
                    return
                self.buf = self.buf[2:]
                self.chunk_state = "size"

    def _feed_sse(self, payload: bytes, t: float) -> None:
        s = self.stream
        assert s is not None
        self.sse += payload
        while True:
            cut = self.sse.find(b"\n\n")
            cut_r = self.sse.find(b"\r\n\r\n")
            if cut_r >= 0 and (cut < 0 or cut_r < cut):
                event, self.sse = self.sse[:cut_r], self.sse[cut_r + 4 :]
            elif cut >= 0:
                event, self.sse = self.sse[:cut], self.sse[cut + 2 :]
            else:
                return
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    self._event(line[5:].strip(), t)

    def _event(self, data: bytes, t: float) -> None:
        s = self.stream
        assert s is not None
        s.events += 1
        if data == b"[DONE]":
            self._finish(t)
            return
        if PROTOCOL["name"] != "chatkit" and data.startswith(b'{"type":"text"'):
            self._text(json.loads(data)["content"], t)
            return
        event = json.loads(data)
        kind = event.get("type")
        if PROTOCOL["name"] == "chatkit":  # the peer: text comes as `thread.item.updated` text deltas
            update = event.get("update") or {}
            if kind == "thread.item.updated" and update.get("type") == "assistant_message.content_part.text_delta":
                self._text(update["delta"], t)
            kind = "start" if kind == "thread.created" else kind if kind == "error" else None
        if kind == "text":  # a differently ordered encoder
            self._text(event["content"], t)
        elif kind == "start":
            if self.on_start is not None:
                self.on_start()
        elif kind == "error":
            s.error = s.error or f"error event: {event.get('code')}"
        elif kind == "done" and event.get("finish_reason") != "stop":
            s.error = s.error or f"finish_reason {event.get('finish_reason')}"

    def _text(self, content: str, t: float) -> None:
        s = self.stream
        assert s is not None
        self.parts.append(content)
        if not s.texts:
            s.first_text = t
        s.texts += 1
        s.arrivals.append(t)


# "ours" (the backend's frames, ending with [DONE]) or "chatkit" (the ChatKit peer); set from the config.
PROTOCOL = {"name": "ours"}


def _request_bytes(host: str, port: int, path: str, message: str) -> bytes:
    if PROTOCOL["name"] == "chatkit":
        content = [{"type": "input_text", "text": message}]
        request = {
            "type": "threads.create",
            "params": {"input": {"content": content, "attachments": [], "inference_options": {}}},
        }
        body = json.dumps(request).encode()
    else:
        body = json.dumps({"message": message}).encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Accept: text/event-stream\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _connect(host: str, port: int) -> _Conn:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(_Conn, host, port)
    return proto


async def _one(
    conn_box: list[_Conn | None],
    cfg: dict[str, Any],
    message: str,
    on_start: Any = None,
    holder: list[Stream | None] | None = None,
) -> Stream:
    """Run one stream on the worker's connection (reconnecting if needed); bounded by stream_timeout."""
    conn = conn_box[0]
    if conn is None or conn.transport is None or conn.transport.is_closing():
        try:
            conn = conn_box[0] = await asyncio.wait_for(_connect(cfg["host"], cfg["port"]), 10)
        except (TimeoutError, OSError) as e:
            s = Stream(sent=now(), end=now(), error=f"connect: {e!r}", done=True)
            await asyncio.sleep(0.1)  # do not spin on a dead server
            return s
    raw = _request_bytes(cfg["host"], cfg["port"], cfg["path"], message)
    stream, finished = conn.request(raw, on_start)
    if holder is not None:
        holder[0] = stream
    try:
        await asyncio.wait_for(asyncio.shield(finished), cfg["stream_timeout"])
    except TimeoutError:
        conn._fail(f"timeout after {cfg['stream_timeout']} s")
    stream.text_ok = "".join(conn.parts) == cfg["expected_text"]
    reusable = False
    if stream.error is None and conn.complete is not None:
        try:
            await asyncio.wait_for(asyncio.shield(conn.complete), 5)
            reusable = True
        except TimeoutError:
            pass
    if not reusable:
        # An error (or an unfinished body) can leave unread bytes on the connection: use a fresh one next.
        if conn.transport is not None:
            conn.transport.close()
        conn_box[0] = None
    conn.stream = None
    return stream


async def closed_loop(cfg: dict[str, Any]) -> list[Stream]:
    """`concurrency` workers, each running streams back to back from start_at until the window closes."""
    stop_launch = cfg["start_at"] + cfg["warmup"] + cfg["window"]
    hard_stop = stop_launch + cfg["drain"]
    results: list[Stream] = []

    async def worker(index: int) -> None:
        box: list[_Conn | None] = [None]
        # Spread the first requests evenly over `ramp` (about one reply's duration): with identical service times
        # a closed loop keeps its phase, so a simultaneous start would keep every stream in lockstep for the
        # whole run (all TTFTs, all saves, at once), which is not what independent users do.
        offset = cfg.get("ramp", 0.5) * index / max(1, cfg["concurrency"])
        await asyncio.sleep(max(0.0, cfg["start_at"] + offset - now()))
        n = 0
        holder: list[Stream | None] = [None]
        try:
            while now() < stop_launch:
                n += 1
                message = f"bench worker {index} message {n}: please list my tasks"
                results.append(await _one(box, cfg, message, holder=holder))
        except asyncio.CancelledError:
            s = holder[0]
            if s is not None and not s.done:  # still streaming at the hard stop: the server fell behind
                s.error, s.end, s.done = "unfinished at the drain deadline", now(), True
                results.append(s)
            raise
        if box[0] is not None and box[0].transport is not None:
            box[0].transport.close()

    tasks = [asyncio.create_task(worker(i)) for i in range(cfg["concurrency"])]
    _, pending = await asyncio.wait(tasks, timeout=max(1.0, hard_stop - now()))
    for task in pending:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*pending, return_exceptions=True)
    return results


async def idle(cfg: dict[str, Any]) -> dict[str, Any]:
    """Open streams that will not get a token for a long time, in stages; hold them; then close them all.

    For each stage (a count of streams), open them in batches, wait until each has seen its ``start`` event, write
    ``ready_file + ".<stage>"`` and wait for ``go_file + ".<stage>"`` (the orchestrator samples RSS in between).
    After the last stage, close everything.
    """
    started = 0
    target = 0
    reached = asyncio.Event()

    def on_start() -> None:
        nonlocal started
        started += 1
        if started >= target:
            reached.set()

    boxes: list[list[_Conn | None]] = []
    tasks = []
    batch = cfg.get("batch", 25)
    stages = cfg.get("stages") or [cfg["concurrency"]]
    report = []
    for stage, count in enumerate(stages):
        target += count
        reached.clear()
        t0 = now()
        for i in range(count):
            box: list[_Conn | None] = [None]
            boxes.append(box)
            tasks.append(asyncio.create_task(_one(box, cfg, f"idle stream {len(boxes)}", on_start)))
            if (i + 1) % batch == 0:
                await asyncio.sleep(0.1)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(reached.wait(), cfg.get("open_timeout", 60))
        report.append({"stage": stage, "opened": started, "seconds": now() - t0})
        Path(f"{cfg['ready_file']}.{stage}").write_text(json.dumps(report[-1]))
        go = Path(f"{cfg['go_file']}.{stage}")
        deadline = now() + cfg.get("hold", 60)
        while not go.exists() and now() < deadline:
            await asyncio.sleep(0.05)
    for box in boxes:
        if box[0] is not None and box[0].transport is not None:
            box[0].transport.abort()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"started": started, "requested": sum(stages), "stages": report}


def _stream_json(s: Stream) -> dict[str, Any]:
    return {
        "sent": s.sent,
        "head": s.head,
        "first_body": s.first_body,
        "first_text": s.first_text,
        "end": s.end,
        "status": s.status,
        "error": s.error,
        "text_ok": s.text_ok,
        "texts": s.texts,
        "events": s.events,
        "arrivals": s.arrivals.tolist(),
    }


def main(argv: list[str] | None = None) -> None:
    """Entry point: read the config, run, write the results."""
    args = sys.argv[1:] if argv is None else argv
    cfg = json.loads(Path(args[0]).read_text())
    if cfg.get("cpus"):
        os.sched_setaffinity(0, set(cfg["cpus"]))
    PROTOCOL["name"] = cfg.get("protocol", "ours")
    runner: Any = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        runner = uvloop.run
    cpu0 = time.process_time()
    if cfg["mode"] == "idle":
        out: dict[str, Any] = runner(idle(cfg))
    else:
        streams = runner(closed_loop(cfg))
        out = {"streams": [_stream_json(s) for s in streams]}
    out["loadgen_cpu_seconds"] = time.process_time() - cpu0
    Path(args[1]).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
