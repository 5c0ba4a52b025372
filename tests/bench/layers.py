"""CPU cost of each layer of the streaming path, in one process, against the fake in another process.

    .venv/bin/python -m tests.bench.layers [--replies 30] [--tokens 100] [--tweaks inline_builder,...]

Sequential replies (no concurrency, so no queueing) at 1 and at 10 tokens per chunk; each layer adds one piece of
the real stack on top of the previous one, and the process CPU time (``time.process_time``, all threads) per reply
and per text chunk is reported:

1. ``aiohttp + json``: the floor's upstream read (POST, iterate SSE lines, ``json.loads``, pick the text parts);
2. ``litellm.acompletion``: LiteLLM's gemini route, ``stream=True``, ``include_usage``, iterating the chunks;
3. ``LitellmModel.stream_response``: the Agents SDK model layer (`GuardedLitellmModel`, ``include_usage``),
   chat-completions chunks converted to Responses events; 3'. the same on our ``FinishChunkLitellmModel`` (what the
   layers above run on), which ends each call at LiteLLM's finish chunk;
4. ``Runner.run_streamed``: the whole agent loop (our agent, tools declared, none called), ``stream_events()``;
5. ``+ translate + encode``: our `StreamTranslator` and msgspec frame encoding on top of (4).

The differences between consecutive layers are what each adds. The fake streams with 1 ms between chunks so each
chunk arrives in its own read (as with real pacing) while a run stays short.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import backend  # noqa: F401  (offline LiteLLM/Agents environment first)

ROOT = Path(__file__).resolve().parents[2]


def _post(url: str, body: dict[str, Any]) -> None:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10):
        pass


async def layer_aiohttp(base: str, n: int) -> int:
    import aiohttp

    chunks = 0
    async with aiohttp.ClientSession() as session:
        for _ in range(n):
            url = f"{base}/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
            body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
            async with session.post(url, json=body) as resp:
                async for line in resp.content:
                    if line.startswith(b"data:"):
                        event = json.loads(line[5:])
                        for cand in event.get("candidates", ()):
                            for part in cand.get("content", {}).get("parts", ()):
                                if part.get("text"):
                                    chunks += 1
    return chunks


async def layer_litellm(base: str, n: int) -> int:
    import litellm

    chunks = 0
    for _ in range(n):
        stream = await litellm.acompletion(
            model="gemini/gemini-2.5-flash",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
            api_base=base,
            api_key="bench-key",
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                chunks += 1
    return chunks


def _agent(base: str, source: str = "finish_chunk") -> Any:
    from backend.chat.model import build_model
    from backend.settings import load_settings
    from backend.team.agents import build_agent

    settings = load_settings(
        gemini_api_key="bench-key",
        gemini_api_base=base,
        offline_model=False,
        database_url="sqlite+aiosqlite:///:memory:",
        auth_secret=None,
        host="127.0.0.1",
        model_usage_source=source,
    )
    return build_agent(*build_model(settings))


async def layer_model(base: str, n: int, source: str = "finish_chunk") -> int:
    from agents.models.interface import ModelTracing

    agent = _agent(base, source)
    model = agent.model
    tools = await agent.get_all_tools(None)  # type: ignore[arg-type]
    chunks = 0
    for _ in range(n):
        async for event in model.stream_response(
            agent.instructions,
            [{"role": "user", "content": "hi"}],
            agent.model_settings,
            tools,
            None,
            [],
            ModelTracing.DISABLED,
        ):
            if event.type == "response.output_text.delta":
                chunks += 1
    return chunks


async def layer_runner(base: str, n: int, translate: bool = False) -> int:
    from agents import Runner

    from backend.chat.context import ChatContext
    from backend.chat.events import encode
    from backend.chat.translate import StreamTranslator

    agent = _agent(base)
    chunks = 0
    for _ in range(n):
        result = Runner.run_streamed(
            agent,
            [{"role": "user", "content": "hi"}],
            context=ChatContext(user_id="local", database=None),  # type: ignore[arg-type]
            max_turns=4,
        )
        translator = StreamTranslator()
        async for ev in result.stream_events():
            if translate:
                event = translator.translate(ev)
                if event is not None:
                    encode(event)
                    chunks += event.__struct_config__.tag == "text"
            elif ev.type == "raw_response_event" and ev.data.type == "response.output_text.delta":
                chunks += 1
    return chunks


LAYERS: list[tuple[str, Callable[[str, int], Awaitable[int]]]] = [
    ("1 aiohttp + json (floor's upstream read)", layer_aiohttp),
    ("2 litellm.acompletion stream", layer_litellm),
    ("3 LitellmModel.stream_response (the SDK's model)", lambda b, n: layer_model(b, n, "litellm_model")),
    ("3' FinishChunkLitellmModel.stream_response (our model)", layer_model),
    ("4 Runner.run_streamed (agent loop)", layer_runner),
    ("5 + StreamTranslator + encode (our code)", lambda b, n: layer_runner(b, n, translate=True)),
]


async def measure(base: str, replies: int, rounds: int) -> list[dict[str, Any]]:
    """Each layer `rounds` times (interleaved), keeping the cheapest round: the least disturbed by other load."""
    best: dict[str, dict[str, Any]] = {}
    for _name, layer in LAYERS:
        await layer(base, 3)  # warm-up: lazy imports, connection pools
    for _ in range(rounds):
        for name, layer in LAYERS:
            cpu0, wall0 = time.process_time(), time.perf_counter()
            chunks = await layer(base, replies)
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            row = {
                "layer": name,
                "replies": replies,
                "chunks": chunks,
                "cpu_ms_per_reply": cpu * 1e3 / replies,
                "cpu_us_per_chunk": cpu * 1e6 / max(1, chunks),
                "wall_s": wall,
            }
            if name not in best or row["cpu_ms_per_reply"] < best[name]["cpu_ms_per_reply"]:
                best[name] = row
    out = [best[name] for name, _ in LAYERS]
    if "tests.bench.gemini_direct" in sys.modules:
        await sys.modules["tests.bench.gemini_direct"].close_sessions()
    return out


def main() -> None:
    """Start the fake, measure each layer at 1 and 10 tokens per chunk, print a table."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.layers")
    parser.add_argument("--replies", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="repeat each layer; the cheapest round is kept")
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--tweaks", default="", help="apply tests.bench.server tweaks in this process first")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.tweaks:
        os.environ["BENCH_TWEAKS"] = args.tweaks
        from tests.bench import server

        server.apply()
    two = (os.cpu_count() or 1) >= 2
    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.bench.fake", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        preexec_fn=(lambda: os.sched_setaffinity(0, {1})) if two else None,
    )
    if two:
        os.sched_setaffinity(0, {0})
    try:
        assert fake.stdout is not None
        port = int(fake.stdout.readline().split()[1])
        base = f"http://127.0.0.1:{port}/v1beta"
        results = {}
        for tpc in (1, 10):
            _post(
                f"http://127.0.0.1:{port}/_bench/config",
                {
                    "tokens": args.tokens,
                    "tokens_per_chunk": tpc,
                    "token_delay": 0.001 / tpc,
                    "time_to_first_chunk": 0,
                    "function_call": False,
                },
            )
            results[tpc] = asyncio.run(measure(base, args.replies, args.rounds))
    finally:
        fake.terminate()
        fake.wait(10)
    lines = [
        f"Sequential replies of {args.tokens} tokens, {args.replies} per layer and round, best of "
        f"{args.rounds} rounds; process CPU time (all threads).",
        f"Tweaks: {args.tweaks or 'none'}",
        "",
        "| layer | ms/reply @1 tok/chunk | µs/chunk @1 | ms/reply @10 tok/chunk | µs/chunk @10 |",
        "|---|---:|---:|---:|---:|",
    ]
    for a, b in zip(results[1], results[10], strict=True):
        lines.append(
            f"| {a['layer']} | {a['cpu_ms_per_reply']:.2f} | {a['cpu_us_per_chunk']:.0f} | "
            f"{b['cpu_ms_per_reply']:.2f} | {b['cpu_us_per_chunk']:.0f} |"
        )
    print("\n".join(lines))  # noqa: T201
    if args.json:
        args.json.write_text(json.dumps({"tweaks": args.tweaks, "results": results}, indent=1))


if __name__ == "__main__":
    main()
