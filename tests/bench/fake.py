"""The load fake: `tests.fakes.gemini.FakeGemini` with fixed, settable timing, run in its own process.

Every ``:streamGenerateContent`` request is answered from the current :class:`LoadConfig`:

* if the request's last content carries a ``function_response`` part (the agent has run the tool), or function-call
  mode is off: the text load turn (``load_turn``: ``tokens`` tokens, ``tokens_per_chunk`` per SSE event,
  ``time_to_first_chunk`` before the first event, ``token_delay * tokens_per_chunk`` between events);
* otherwise, if the request offers the triage agent's ``transfer_to_task_assistant`` but not ``tool_name`` (the
  first message of a new conversation): that handoff, sent after ``time_to_first_chunk``;
* otherwise: a ``function_call_turn`` calling ``tool_name(tool_args)``, sent after ``time_to_first_chunk``.

So with function-call mode on, each reply takes two upstream requests (three for a new conversation's first),
decided per request (no shared queue, so any number of concurrent streams works). Chunks are written against absolute
deadlines (start + first + i * gap), so the fake's own scheduling jitter does not accumulate; the events are
pre-encoded once per config.

Control API (JSON): ``POST /_bench/config`` (partial :class:`LoadConfig`, returns the full one),
``GET /_bench/state`` (counters), ``POST /_bench/reset`` (zero the counters).

Standalone: ``python -m tests.bench.fake --port 0`` prints ``READY <port>`` on stdout once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import signal
import sys
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.gemini import FakeGemini, function_call_turn, handoff_turn, load_chunks, load_text, load_turn

MODEL_VERSION = "gemini-2.5-flash"


@dataclass(frozen=True, slots=True)
class LoadConfig:
    """How the fake answers. Times are in seconds."""

    tokens: int = 100
    tokens_per_chunk: int = 1
    token_delay: float = 0.020
    time_to_first_chunk: float = 0.200
    function_call: bool = True
    tool_name: str = "list_tasks"
    tool_args: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def chunk_gap(self) -> float:
        """Seconds between two text events of one reply."""
        return self.token_delay * self.tokens_per_chunk

    @property
    def text(self) -> str:
        """The exact text of every reply."""
        return load_text(self.tokens)

    @property
    def chunks(self) -> int:
        """Text events per reply."""
        return len(load_chunks(self.tokens, self.tokens_per_chunk))

    @property
    def upstream_ttft(self) -> float:
        """The fake's own time to first text: one turn's time to first chunk, or three with the tool turn.

        With the tool turn every server under test offers the triage handoff first (ours, the ChatKit peer with
        our team, the floor), so a new conversation is handoff, function call, then text.
        """
        return self.time_to_first_chunk * (3 if self.function_call else 1)

    def to_json(self) -> dict[str, Any]:
        """Fields plus the derived figures."""
        return dataclasses.asdict(self) | {
            "chunk_gap": self.chunk_gap,
            "chunks": self.chunks,
            "upstream_ttft": self.upstream_ttft,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], base: LoadConfig | None = None) -> LoadConfig:
        """Overlay the known keys of `data` on `base` (or the defaults)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return dataclasses.replace(base or cls(), **{k: v for k, v in data.items() if k in names})


def _sse(event: dict[str, Any], response_id: str) -> bytes:
    if "candidates" in event:
        event = {**event, "modelVersion": MODEL_VERSION, "responseId": response_id}
    return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\r\n\r\n"


HANDOFF = "transfer_to_task_assistant"


def _answered_tool(part: dict[str, Any]) -> bool:
    """Whether a content part answers a tool call (a handoff's answer does not count: the work is still to do)."""
    response = part.get("function_response") or part.get("functionResponse")
    return isinstance(response, dict) and not str(response.get("name", "")).startswith("transfer_to_")


def _encoded_events(steps: tuple[Any, ...]) -> list[bytes]:
    return [_sse(step, "bench") for step in steps if isinstance(step, dict)]


class BenchFake(FakeGemini):
    """FakeGemini whose answer is chosen per request from a :class:`LoadConfig` (see the module docstring)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, config: LoadConfig | None = None) -> None:
        super().__init__(host=host, port=port, control=False)
        self.load_config = config or LoadConfig()
        self.stats = {
            "requests": 0,
            "text_turns": 0,
            "tool_turns": 0,
            "handoff_turns": 0,
            "completed": 0,
            "disconnects": 0,
        }
        self._rebuild()

    def configure(self, config: LoadConfig) -> None:
        """Switch every following request to `config`."""
        self.load_config = config
        self._rebuild()

    def _rebuild(self) -> None:
        c = self.load_config
        self._text_events = _encoded_events(load_turn(c.tokens, c.tokens_per_chunk).stream.steps)
        self._tool_events = _encoded_events(function_call_turn(c.tool_name, c.tool_args).stream.steps)
        self._handoff_events = _encoded_events(handoff_turn().stream.steps)

    async def start(self) -> str:
        """Bind and serve the model route and the bench control API (FakeGemini's own control API is off)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/{version}/models/{target}", self._handle_model)
        app.router.add_post("/_bench/config", self._config)
        app.router.add_get("/_bench/state", self._state)
        app.router.add_post("/_bench/reset", self._reset)
        # handler_cancellation: a client that goes away cancels its handler at once (also while it sleeps).
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True, backlog=4096)
        await self._site.start()
        self.port = int(self._runner.addresses[0][1])
        self._stopping = False
        self._base_url = f"http://{self.host}:{self.port}/v1beta"
        return self._base_url

    async def _handle_model(self, request: web.Request) -> web.StreamResponse:
        config = self.load_config
        self.stats["requests"] += 1
        try:
            body = json.loads(await request.read() or b"{}")
        except ValueError:
            body = {}
        contents = body.get("contents") or [{}]
        last_parts = contents[-1].get("parts") or ()
        tool_done = any(_answered_tool(p) for p in last_parts)
        offered = {f.get("name") for group in body.get("tools") or () for f in group.get("function_declarations") or ()}
        if config.function_call and not tool_done and config.tool_name not in offered and HANDOFF in offered:
            events, gap = self._handoff_events, 0.0  # triage: hand off to the agent with the tools first
            self.stats["handoff_turns"] += 1
        elif config.function_call and not tool_done:
            events, gap = self._tool_events, 0.0
            self.stats["tool_turns"] += 1
        else:
            events, gap = self._text_events, config.chunk_gap
            self.stats["text_turns"] += 1
        resp = web.StreamResponse(
            status=200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        self._active[id(request)] = request
        try:
            await resp.prepare(request)  # headers at once, like Google; then the timed events
            loop = asyncio.get_running_loop()
            start = loop.time() + config.time_to_first_chunk
            for i, data in enumerate(events):
                wait = start + i * gap - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                await resp.write(data)
            await resp.write_eof()
        except ConnectionResetError:
            self.stats["disconnects"] += 1
            return resp
        except asyncio.CancelledError:
            self.stats["disconnects"] += 1
            raise
        finally:
            self._active.pop(id(request), None)
        self.stats["completed"] += 1
        return resp

    async def _config(self, request: web.Request) -> web.Response:
        try:
            self.configure(LoadConfig.from_json(await request.json(), self.load_config))
        except (ValueError, TypeError) as e:
            return web.json_response({"error": str(e)}, status=400)
        return web.json_response(self.load_config.to_json())

    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats | {"active": len(self._active), "config": self.load_config.to_json()})

    async def _reset(self, request: web.Request) -> web.Response:
        for key in self.stats:
            self.stats[key] = 0
        return web.json_response({"ok": True})


async def _serve(host: str, port: int) -> None:
    fake = BenchFake(host=host, port=port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await fake.start()
    print(f"READY {fake.port}", flush=True)  # noqa: T201  (the orchestrator reads this line)
    try:
        await stop.wait()
    finally:
        await fake.stop()


def main(argv: list[str] | None = None) -> None:
    """Run the fake until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.fake", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args(argv)
    if not args.no_uvloop:
        with contextlib.suppress(ImportError):
            import uvloop

            uvloop.run(_serve(args.host, args.port))
            return
    asyncio.run(_serve(args.host, args.port))


if __name__ == "__main__":
    sys.exit(main())
