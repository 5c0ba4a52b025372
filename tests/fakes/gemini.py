r"""A scriptable fake of the Google Gemini ``generateContent`` HTTP API for offline tests.

LiteLLM's real ``gemini/`` code path runs against it when ``GEMINI_API_BASE`` (or ``LitellmModel(base_url=...)``) is
set to the ``base_url`` returned by :meth:`FakeGemini.start`, e.g. ``http://127.0.0.1:PORT/v1beta``. Served routes:

* ``POST /{version}/models/{model}:streamGenerateContent?alt=sse``: one SSE event ``data: {json}\r\n\r\n``
  per chunk, no ``[DONE]`` sentinel (the end of the chunked body ends the stream), exactly like Google.
* ``POST /{version}/models/{model}:generateContent``: the merged JSON of the same turn.
* ``POST /_control/script``, ``POST /_control/reset``, ``GET /_control/state``, ``GET /_control/requests``: a tiny
  JSON API so that out-of-process tests (e.g. browser tests) can script a standalone server.

Every request pops one :class:`Turn` from a FIFO queue filled with :meth:`FakeGemini.script`; when the queue is empty
:attr:`FakeGemini.default_turn` (a plain ``"ok"`` text turn unless changed) is served, so load tests can run forever.
Unary ``:generateContent`` requests (e.g. a conversation's title) pop from their own queue first when
:meth:`FakeGemini.script_unary` filled it, so they can run alongside a streamed turn in any order.

Example:
    ```python
    async with FakeGemini() as fake:
        fake.script(function_call_turn("get_weather", {"city": "Paris"}), text_turn("Sunny in Paris."))
        model = LitellmModel("gemini/gemini-2.5-flash", base_url=fake.base_url, api_key="test-key")
        ...
        assert fake.requests[1]["contents"][-1]["parts"][0]["function_response"]["name"] == "get_weather"
    ```

Standalone: ``python -m tests.fakes.gemini --port 8089 [--script turns.json] [--default-text ok]``; stop it with
SIGTERM or SIGINT. ``turns.json`` holds a list of turn specs, see :func:`turn_from_spec`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import json
import logging
import re
import signal
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import EllipsisType
from typing import Any, Final, Self

from aiohttp import web

__all__ = [
    "ABORT",
    "FakeGemini",
    "Reply",
    "Turn",
    "drop_turn",
    "error_turn",
    "function_call_turn",
    "handoff_turn",
    "load_chunks",
    "load_text",
    "load_turn",
    "main",
    "mid_stream_error_turn",
    "raw_turn",
    "split_words",
    "text_turn",
    "truncated_turn",
    "turn_from_spec",
    "turns_from_spec",
]

logger = logging.getLogger(__name__)

GOOGLE_STATUS: Final[dict[int, str]] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
"""HTTP status to the ``status`` string Google puts in its error envelope."""

_DEFAULT_MESSAGES: Final[dict[int, str]] = {
    400: "Request contains an invalid argument.",
    401: "API key not valid. Please pass a valid API key.",
    403: "The caller does not have permission.",
    404: "models/unknown is not found for API version v1beta.",
    429: "Resource has been exhausted (e.g. check quota).",
    500: "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}

_ROUTE_RE: Final = re.compile(r"^(?P<model>.+):(?P<method>streamGenerateContent|generateContent)$")
_WORD_RE: Final = re.compile(r"\s*\S+\s*")
_SSE_HEADERS: Final = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
}
_JSON_HEADERS: Final = {"Content-Type": "application/json; charset=UTF-8"}
_response_ids: Final = itertools.count(1)


class _Abort:
    """Type of the :data:`ABORT` sentinel."""

    def __repr__(self) -> str:
        return "ABORT"


ABORT: Final = _Abort()
"""A step that aborts the TCP connection (``transport.abort()``) without ending the chunked body."""

Step = bytes | float | dict[str, Any] | _Abort
"""One step of a :class:`Reply`.

``bytes`` are written as-is; a ``float`` (or ``int``) is a sleep in seconds; a ``dict`` is one response object
(framed as an SSE ``data:`` event in a streaming reply, or written as the JSON body of a unary reply, with
``modelVersion``/``responseId`` filled in if it carries ``candidates``); :data:`ABORT` aborts the connection.
"""


@dataclass(frozen=True, slots=True)
class Reply:
    """How the fake answers one request in one of the two modes (streaming or unary).

    Attributes:
        status: HTTP status code.
        steps: What to write, in order (see :data:`Step`).
        sse: Frame ``dict`` steps as SSE events and send ``text/event-stream``; otherwise JSON.
        close: Close the connection after this reply (``Connection: close``) instead of keeping it alive.
    """

    status: int = 200
    steps: tuple[Step, ...] = ()
    sse: bool = True
    close: bool = False


@dataclass(frozen=True, slots=True)
class Turn:
    """One scripted model turn: what the fake answers to one request.

    Build turns with the module-level builders (:func:`text_turn`, :func:`function_call_turn`, ...). A turn is
    immutable and may be served any number of times (e.g. as :attr:`FakeGemini.default_turn`).

    Attributes:
        kind: The builder that made it (``"text"``, ``"function_call"``, ``"error"``, ...), for logs and repr.
        stream: The reply to ``:streamGenerateContent``.
        unary: The reply to ``:generateContent``.
        chunks: The visible (non-thought) text chunks the streaming reply sends, in order.
        text: ``"".join(chunks)``.
    """

    kind: str
    stream: Reply
    unary: Reply
    chunks: tuple[str, ...] = ()
    text: str = ""


# --------------------------------------------------------------------------------------------------------------------
# Turn builders
# --------------------------------------------------------------------------------------------------------------------


def said(request: Mapping[str, Any]) -> list[str]:
    """The texts of a recorded model request in order, each as `role: text` (what the model was given)."""
    return [
        f"{content['role']}: {part['text']}"
        for content in request["contents"]
        for part in content["parts"]
        if "text" in part
    ]


def split_words(text: str) -> list[str]:
    """Split text into word chunks that keep their surrounding whitespace.

    Args:
        text: Any text.

    Returns:
        Chunks such as ``["It ", "is ", "sunny."]`` whose concatenation is exactly ``text``.
    """
    chunks = _WORD_RE.findall(text)
    if "".join(chunks) != text:  # only whitespace, or nothing
        return [text] if text else []
    return chunks


def _usage(usage: Sequence[int] | None) -> dict[str, int] | None:
    if usage is None:
        return None
    if len(usage) not in (2, 3):
        raise ValueError(f"usage must be (prompt, candidates) or (prompt, candidates, thoughts), got {usage!r}")
    prompt, candidates = int(usage[0]), int(usage[1])
    meta = {"promptTokenCount": prompt, "candidatesTokenCount": candidates}
    total = prompt + candidates
    if len(usage) == 3:
        meta["thoughtsTokenCount"] = int(usage[2])
        total += int(usage[2])
    meta["totalTokenCount"] = total
    return meta


def _candidate_event(
    parts: list[dict[str, Any]], *, finish_reason: str | None = None, usage: dict[str, int] | None = None
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish_reason is not None:
        candidate["finishReason"] = finish_reason
    event: dict[str, Any] = {"candidates": [candidate]}
    if usage is not None:
        event["usageMetadata"] = usage
    return event


def _merge(events: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Merge streamed response objects into the single object ``:generateContent`` returns."""
    parts: list[dict[str, Any]] = []
    finish_reason: str | None = None
    usage: dict[str, int] | None = None
    for event in events:
        for candidate in event.get("candidates", []):
            for part in candidate.get("content", {}).get("parts", []):
                last = parts[-1] if parts else None
                if (
                    last is not None
                    and set(part) <= {"text", "thought"}
                    and set(last) <= {"text", "thought"}
                    and bool(part.get("thought")) == bool(last.get("thought"))
                ):
                    parts[-1] = {**last, "text": last["text"] + part["text"]}
                else:
                    parts.append(dict(part))
            finish_reason = candidate.get("finishReason", finish_reason)
        usage = event.get("usageMetadata", usage)
    return _candidate_event(parts, finish_reason=finish_reason, usage=usage)


def _error_body(status: int, message: str | None, google_status: str | None) -> dict[str, Any]:
    return {
        "error": {
            "code": status,
            "message": message if message is not None else _DEFAULT_MESSAGES.get(status, f"Fake Gemini error {status}"),
            "status": google_status or GOOGLE_STATUS.get(status, "UNKNOWN"),
        }
    }


def _text_steps(chunks: Sequence[str], *, first_delay: float = 0.0, delay: float = 0.0) -> list[Step]:
    steps: list[Step] = []
    for i, chunk in enumerate(chunks):
        pause = first_delay if i == 0 else delay
        if pause > 0:
            steps.append(float(pause))
        steps.append(_candidate_event([{"text": chunk}]))
    return steps


def _events(steps: Iterable[Step]) -> list[dict[str, Any]]:
    return [step for step in steps if isinstance(step, dict)]


def _delays(steps: Iterable[Step]) -> float:
    return sum(float(step) for step in steps if isinstance(step, int | float))


def text_turn(
    text_or_chunks: str | Sequence[str],
    *,
    delay: float = 0.0,
    first_delay: float = 0.0,
    usage: tuple[int, int] | tuple[int, int, int] | EllipsisType | None = ...,
    thinking: Sequence[str] | None = None,
    finish_reason: str | None = "STOP",
) -> Turn:
    """A streamed text answer.

    Args:
        text_or_chunks: A string, split into word chunks with :func:`split_words`, or the exact chunks to send.
        delay: Seconds to sleep between consecutive chunks.
        first_delay: Seconds to sleep (after the response headers) before the first chunk.
        usage: ``(prompt_tokens, candidates_tokens)`` or ``(prompt, candidates, thoughts)`` put as ``usageMetadata``
            on the last chunk; ``None`` omits it; the default is ``(10, number_of_text_chunks)``.
        thinking: Thought summaries, each sent as its own chunk ``{"text": ..., "thought": true}`` before the text.
        finish_reason: ``finishReason`` of the last chunk (``"STOP"``, ``"MAX_TOKENS"``, ...); ``None`` omits it.

    Returns:
        The turn. Each chunk is one SSE event carrying ``candidates[0].content.parts == [{"text": chunk}]``.
    """
    chunks = split_words(text_or_chunks) if isinstance(text_or_chunks, str) else [str(c) for c in text_or_chunks]
    if usage is ...:
        usage = (10, len(chunks))
    parts: list[dict[str, Any]] = [{"text": t, "thought": True} for t in thinking or ()]
    parts += [{"text": c} for c in chunks]
    if not parts:
        parts = [{"text": ""}]
    steps: list[Step] = []
    for i, part in enumerate(parts):
        pause = first_delay if i == 0 else delay
        if pause > 0:
            steps.append(float(pause))
        last = i == len(parts) - 1
        steps.append(
            _candidate_event(
                [part],
                finish_reason=finish_reason if last else None,
                usage=_usage(usage) if last else None,
            )
        )
    unary = Reply(steps=(_delays(steps), _merge(_events(steps))), sse=False)
    return Turn("text", Reply(steps=tuple(steps)), unary, tuple(chunks), "".join(chunks))


def handoff_turn(agent: str = "task_assistant", *, usage: tuple[int, int] | None = (10, 2)) -> Turn:
    """A turn in which the model hands the conversation to another agent (the SDK's `transfer_to_<agent>` tool).

    A new conversation starts with the triage agent, which has no task tools: script this turn first when the test's
    next turn calls one of the task assistant's tools.

    Args:
        agent: The target agent's name in the SDK's snake case (`task_assistant`, `help`, `triage`).
        usage: ``usageMetadata`` as in :func:`text_turn`.

    Returns:
        The turn.
    """
    return function_call_turn(f"transfer_to_{agent}", {}, usage=usage)


def function_call_turn(
    name: str,
    args: Mapping[str, Any],
    *,
    more_calls: Sequence[tuple[str, Mapping[str, Any]]] = (),
    thought_signature: str | None = None,
    usage: tuple[int, int] | tuple[int, int, int] | None = (20, 7),
    delay: float = 0.0,
) -> Turn:
    """A turn in which the model calls one or more tools, sent as one chunk with ``finishReason: STOP``.

    Args:
        name: The function name of the first call.
        args: Its arguments.
        more_calls: Further ``(name, args)`` calls in the same chunk (parallel tool calls).
        thought_signature: A ``thoughtSignature`` put on the first ``functionCall`` part (Gemini 3 style).
        usage: ``usageMetadata`` as in :func:`text_turn`; ``None`` omits it.
        delay: Seconds to sleep (after the response headers) before the chunk.

    Returns:
        The turn.
    """
    parts: list[dict[str, Any]] = []
    for i, (call_name, call_args) in enumerate([(name, args), *more_calls]):
        part: dict[str, Any] = {"functionCall": {"name": call_name, "args": dict(call_args)}}
        if i == 0 and thought_signature is not None:
            part["thoughtSignature"] = thought_signature
        parts.append(part)
    event = _candidate_event(parts, finish_reason="STOP", usage=_usage(usage))
    steps: list[Step] = [float(delay), event] if delay > 0 else [event]
    unary = Reply(steps=(_delays(steps), _merge([event])), sse=False)
    return Turn("function_call", Reply(steps=tuple(steps)), unary)


def error_turn(
    status: int,
    message: str | None = None,
    *,
    google_status: str | None = None,
    delay: float = 0.0,
) -> Turn:
    """An HTTP error answered before any stream starts, with Google's error envelope.

    Args:
        status: HTTP status, e.g. 429, 500, 503 or 400.
        message: ``error.message``; a Google-like text for the status by default.
        google_status: ``error.status``; derived from ``status`` by default (429 → ``RESOURCE_EXHAUSTED``,
            500 → ``INTERNAL``, 503 → ``UNAVAILABLE``, 400 → ``INVALID_ARGUMENT``, ...).
        delay: Seconds to wait before answering.

    Returns:
        The turn; the body is ``{"error": {"code": status, "message": ..., "status": ...}}`` in both modes.
    """
    body = _error_body(status, message, google_status)
    steps: tuple[Step, ...] = (float(delay), body) if delay > 0 else (body,)
    reply = Reply(status=status, steps=steps, sse=False)
    return Turn("error", reply, reply)


def mid_stream_error_turn(
    chunks_before: Sequence[str],
    status: int = 500,
    message: str | None = None,
    *,
    google_status: str | None = None,
    delay: float = 0.0,
) -> Turn:
    """A stream that sends some text, then an in-band ``data: {"error": {...}}`` event, then ends.

    Args:
        chunks_before: Text chunks sent (without ``finishReason``) before the error event.
        status: ``error.code`` of the event (the HTTP status stays 200, as the stream has started).
        message: ``error.message``.
        google_status: ``error.status``; derived from ``status`` by default.
        delay: Seconds to sleep before each event.

    Returns:
        The turn. In unary mode it is a plain HTTP ``status`` error.
    """
    body = _error_body(status, message, google_status)
    steps = [*_text_steps(chunks_before, first_delay=delay, delay=delay)]
    if delay > 0:
        steps.append(float(delay))
    steps.append(body)
    stream = Reply(steps=tuple(steps), close=True)
    unary = Reply(status=status, steps=(_delays(steps), body), sse=False)
    return Turn("mid_stream_error", stream, unary, tuple(chunks_before), "".join(chunks_before))


_TRUNCATED: Final = b'data: {"candidates": [{"content": \r\n\r\n'


def truncated_turn(chunks_before: Sequence[str], *, delay: float = 0.0) -> Turn:
    """A stream that sends some text chunks, then a truncated (invalid JSON) last event, then ends the body.

    Args:
        chunks_before: Text chunks sent (without ``finishReason``) before the broken event.
        delay: Seconds to sleep before each event.

    Returns:
        The turn. In unary mode the body is the same truncated JSON with status 200.
    """
    steps = [*_text_steps(chunks_before, first_delay=delay, delay=delay)]
    if delay > 0:
        steps.append(float(delay))
    steps.append(_TRUNCATED)
    stream = Reply(steps=tuple(steps), close=True)
    unary = Reply(steps=(_delays(steps), b'{"candidates": [{"content": '), sse=False, close=True)
    return Turn("truncated", stream, unary, tuple(chunks_before), "".join(chunks_before))


def drop_turn(chunks_before: Sequence[str], *, delay: float = 0.0) -> Turn:
    """A stream that sends some text chunks, then aborts the TCP connection without ending the chunked body.

    Args:
        chunks_before: Text chunks sent (without ``finishReason``) before the abort.
        delay: Seconds to sleep before each chunk and before the abort.

    Returns:
        The turn. In unary mode the connection is aborted before any response is sent.
    """
    steps = [*_text_steps(chunks_before, first_delay=delay, delay=delay)]
    if delay > 0:
        steps.append(float(delay))
    steps.append(ABORT)
    unary = Reply(steps=(_delays(steps), ABORT), sse=False)
    return Turn("drop", Reply(steps=tuple(steps)), unary, tuple(chunks_before), "".join(chunks_before))


def raw_turn(events: Sequence[bytes | str | float | _Abort], *, status: int = 200) -> Turn:
    """The escape hatch: write exactly these bytes.

    Args:
        events: ``bytes`` (or ``str``, UTF-8 encoded) are written raw, numbers are sleeps in seconds, and
            :data:`ABORT` aborts the connection. Nothing is added: write the ``data: `` framing yourself.
        status: The HTTP status line. Headers are those of an SSE stream.

    Returns:
        The turn; the unary reply writes the same bytes.
    """
    steps: list[Step] = []
    for event in events:
        if isinstance(event, str):
            steps.append(event.encode())
        elif isinstance(event, bytes | _Abort):
            steps.append(event)
        else:
            steps.append(float(event))
    reply = Reply(status=status, steps=tuple(steps))
    return Turn("raw", reply, reply)


def load_chunks(tokens: int, tokens_per_chunk: int, word: str = "tok") -> list[str]:
    """The text chunks :func:`load_turn` sends.

    Args:
        tokens: Number of tokens (words) in the answer.
        tokens_per_chunk: Tokens per streamed chunk.
        word: The token stem.

    Returns:
        Chunks of ``f"{word}{i}"`` tokens separated by single spaces, e.g. ``["tok0 tok1 ", "tok2"]``.
    """
    if tokens_per_chunk < 1:
        raise ValueError("tokens_per_chunk must be >= 1")
    words = [f"{word}{i}" + (" " if i < tokens - 1 else "") for i in range(tokens)]
    return ["".join(words[i : i + tokens_per_chunk]) for i in range(0, tokens, tokens_per_chunk)]


def load_text(tokens: int, word: str = "tok") -> str:
    """The exact full text :func:`load_turn` sends (independent of the chunking).

    Args:
        tokens: Number of tokens.
        word: The token stem.

    Returns:
        ``"tok0 tok1 ... tok{tokens-1}"``.
    """
    return " ".join(f"{word}{i}" for i in range(tokens))


def load_turn(
    tokens: int,
    tokens_per_chunk: int = 1,
    token_delay: float = 0.0,
    first_delay: float = 0.0,
    word: str = "tok",
) -> Turn:
    """A deterministic benchmark answer with a controllable time-to-first-token and token rate.

    Args:
        tokens: Number of tokens (words) in the answer; reported as ``candidatesTokenCount``.
        tokens_per_chunk: Tokens per SSE event.
        token_delay: Seconds per token; consecutive chunks are ``token_delay * tokens_per_chunk`` apart.
        first_delay: Seconds before the first chunk (time to first token).
        word: The token stem.

    Returns:
        The turn; its ``text`` equals :func:`load_text` ``(tokens, word)``.
    """
    turn = text_turn(
        load_chunks(tokens, tokens_per_chunk, word),
        delay=token_delay * tokens_per_chunk,
        first_delay=first_delay,
        usage=(10, tokens),
    )
    return Turn("load", turn.stream, turn.unary, turn.chunks, turn.text)


def _opt_usage(spec: Mapping[str, Any], default: Any) -> Any:
    if "usage" not in spec:
        return default
    value = spec["usage"]
    return None if value is None else tuple(int(v) for v in value)


def turn_from_spec(spec: Mapping[str, Any]) -> Turn:
    r"""Build a turn from a JSON spec (the format of ``--script`` files and ``POST /_control/script``).

    Supported specs (optional keys mirror the builders' keyword arguments)::

        {"kind": "text", "text": "Hello there" | ["Hel", "lo"], "delay": 0.05, "first_delay": 0.2,
         "usage": [10, 2] | null, "thinking": ["..."], "finish_reason": "STOP" | null}
        {"kind": "function_call", "name": "add_task", "args": {...}, "more_calls": [["name", {...}], ...],
         "thought_signature": "sig", "usage": [20, 7], "delay": 0.0}
        {"kind": "error", "status": 429, "message": "...", "google_status": "RESOURCE_EXHAUSTED", "delay": 0.0}
        {"kind": "mid_stream_error", "chunks": ["a ", "b "], "status": 500, "message": "...", "delay": 0.0}
        {"kind": "truncated", "chunks": [...], "delay": 0.0}
        {"kind": "drop", "chunks": [...], "delay": 0.0}
        {"kind": "load", "tokens": 200, "tokens_per_chunk": 4, "token_delay": 0.01, "first_delay": 0.3, "word": "tok"}
        {"kind": "raw", "events": ["data: {...}\r\n\r\n", 0.5, "__drop__"], "status": 200}

    ``kind`` defaults to ``"text"``.

    Args:
        spec: One spec.

    Returns:
        The turn.

    Raises:
        ValueError: Unknown ``kind`` or missing/invalid fields.
    """
    kind = spec.get("kind", "text")
    try:
        if kind == "text":
            return text_turn(
                spec.get("text", ""),
                delay=float(spec.get("delay", 0.0)),
                first_delay=float(spec.get("first_delay", 0.0)),
                usage=_opt_usage(spec, ...),
                thinking=spec.get("thinking"),
                finish_reason=spec.get("finish_reason", "STOP"),
            )
        if kind == "function_call":
            more = [
                (c["name"], c.get("args", {})) if isinstance(c, Mapping) else (c[0], c[1])
                for c in spec.get("more_calls", ())
            ]
            return function_call_turn(
                spec["name"],
                spec.get("args", {}),
                more_calls=more,
                thought_signature=spec.get("thought_signature"),
                usage=_opt_usage(spec, (20, 7)),
                delay=float(spec.get("delay", 0.0)),
            )
        if kind == "error":
            return error_turn(
                int(spec.get("status", 500)),
                spec.get("message"),
                google_status=spec.get("google_status"),
                delay=float(spec.get("delay", 0.0)),
            )
        if kind == "mid_stream_error":
            return mid_stream_error_turn(
                spec.get("chunks", []),
                int(spec.get("status", 500)),
                spec.get("message"),
                google_status=spec.get("google_status"),
                delay=float(spec.get("delay", 0.0)),
            )
        if kind == "truncated":
            return truncated_turn(spec.get("chunks", []), delay=float(spec.get("delay", 0.0)))
        if kind == "drop":
            return drop_turn(spec.get("chunks", []), delay=float(spec.get("delay", 0.0)))
        if kind == "load":
            return load_turn(
                int(spec["tokens"]),
                int(spec.get("tokens_per_chunk", 1)),
                float(spec.get("token_delay", 0.0)),
                float(spec.get("first_delay", 0.0)),
                str(spec.get("word", "tok")),
            )
        if kind == "raw":
            events = [ABORT if e == "__drop__" else e for e in spec.get("events", [])]
            return raw_turn(events, status=int(spec.get("status", 200)))
    except (KeyError, TypeError, IndexError) as e:
        raise ValueError(f"invalid {kind!r} turn spec {dict(spec)!r}: {e!r}") from e
    raise ValueError(f"unknown turn kind {kind!r} in {dict(spec)!r}")


def turns_from_spec(specs: Any) -> list[Turn]:
    """Build turns from a JSON list of specs (see :func:`turn_from_spec`).

    Args:
        specs: A list of spec objects.

    Returns:
        The turns, in order.

    Raises:
        ValueError: ``specs`` is not a list of objects, or a spec is invalid.
    """
    if not isinstance(specs, list) or not all(isinstance(s, Mapping) for s in specs):
        raise ValueError("a script must be a JSON list of turn objects")
    return [turn_from_spec(s) for s in specs]


# --------------------------------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------------------------------


class _ClientGoneError(ConnectionResetError):
    """The client closed the connection while the fake was still answering."""


@dataclass(eq=False)
class FakeGemini:
    """An in-process fake Gemini server on aiohttp (``AppRunner`` + ``TCPSite``).

    Attributes:
        host: Interface to bind.
        port: Port to bind; ``0`` picks a free port (read the actual one from :attr:`port` after start).
        default_turn: Served when the script queue is empty; a plain ``"ok"`` text turn unless set.
        control: Serve the ``/_control`` JSON API.
        requests: One dict per model request, in arrival order: the parsed JSON body LiteLLM sent
            (``contents``, ``system_instruction``, ``tools``, ``generationConfig``, ...) plus ``model``
            (e.g. ``"gemini-2.5-flash"``), ``method`` (``"streamGenerateContent"`` or ``"generateContent"``),
            ``stream`` (bool), ``path`` (path and query), ``headers`` (lower-cased names) and ``api_key``
            (the ``x-goog-api-key`` header, or the ``key`` query parameter, or ``None``). A body that is not a
            JSON object is kept as ``{"_raw": text}``.
        disconnects: Times a client went away before the fake finished writing its turn (detected within
            milliseconds, even while the fake sleeps between chunks).
        completed: Turns the fake wrote to the end (including scripted errors, truncations and drops).
    """

    host: str = "127.0.0.1"
    port: int = 0
    default_turn: Turn = field(default_factory=lambda: text_turn("ok"), repr=False)
    control: bool = True
    requests: list[dict[str, Any]] = field(default_factory=list, init=False, repr=False)
    disconnects: int = field(default=0, init=False)
    completed: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._queue: collections.deque[Turn] = collections.deque()
        self._unary_queue: collections.deque[Turn] = collections.deque()
        self._initial_default = self.default_turn
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._active: dict[int, web.BaseRequest] = {}  # id(request) -> request (requests are unhashable)
        self._stopping = False
        self._base_url: str | None = None

    # ---- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> str:
        """Bind and start serving.

        Returns:
            The base URL for LiteLLM, ``http://HOST:PORT/v1beta``.
        """
        if self._runner is not None:
            raise RuntimeError("FakeGemini already started")
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/{version}/models/{target}", self._handle_model)
        if self.control:
            app.router.add_post("/_control/script", self._control_script)
            app.router.add_post("/_control/reset", self._control_reset)
            app.router.add_get("/_control/state", self._control_state)
            app.router.add_get("/_control/requests", self._control_requests)
        # handler_cancellation: aiohttp cancels the handler as soon as the client's connection is lost, so a
        # disconnect is noticed immediately even while the handler sleeps between chunks.
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=2.0, access_log=None)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await self._site.start()
        self.port = int(self._runner.addresses[0][1])
        self._stopping = False
        self._base_url = f"http://{self.host}:{self.port}/v1beta"
        logger.info("fake Gemini listening on %s", self._base_url)
        return self._base_url

    async def stop(self) -> None:
        """Abort in-flight streams and stop serving. Safe to call twice."""
        if self._runner is None:
            return
        self._stopping = True
        for request in list(self._active.values()):
            transport = request.transport
            if transport is not None:
                transport.abort()
        await self._runner.cleanup()
        self._runner = None
        self._site = None
        logger.info("fake Gemini on %s stopped", self._base_url)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1beta``; only valid after :meth:`start`."""
        if self._base_url is None:
            raise RuntimeError("FakeGemini not started")
        return self._base_url

    @property
    def root_url(self) -> str:
        """``http://HOST:PORT`` (where ``/_control`` lives); only valid after :meth:`start`."""
        return self.base_url.removesuffix("/v1beta")

    # ---- scripting ---------------------------------------------------------------------------------------------

    def script(self, *turns: Turn) -> None:
        """Append turns to the FIFO queue; each model request pops one.

        Args:
            *turns: Turns built with the module's builders.
        """
        for turn in turns:
            if not isinstance(turn, Turn):
                raise TypeError(f"expected a Turn, got {turn!r}")
        self._queue.extend(turns)

    def script_unary(self, *turns: Turn) -> None:
        """Append turns to the queue of unary (``:generateContent``) requests, served before the main queue.

        Args:
            *turns: Turns built with the module's builders (their unary reply is served).
        """
        for turn in turns:
            if not isinstance(turn, Turn):
                raise TypeError(f"expected a Turn, got {turn!r}")
        self._unary_queue.extend(turns)

    @property
    def queued(self) -> int:
        """Number of scripted turns not served yet (streaming and unary)."""
        return len(self._queue) + len(self._unary_queue)

    def reset(self) -> None:
        """Clear the queue, the recorded requests and the counters; restore the initial default turn."""
        self._queue.clear()
        self._unary_queue.clear()
        self.requests.clear()
        self.disconnects = 0
        self.completed = 0
        self.default_turn = self._initial_default

    def state(self) -> dict[str, Any]:
        """A JSON-able summary (what ``GET /_control/state`` returns).

        Returns:
            ``{"requests", "disconnects", "completed", "queued", "active", "last_request"}``.
        """
        return {
            "requests": len(self.requests),
            "disconnects": self.disconnects,
            "completed": self.completed,
            "queued": self.queued,
            "active": len(self._active),
            "last_request": self.requests[-1] if self.requests else None,
        }

    async def wait_until(self, predicate: Callable[[FakeGemini], bool], within: float = 2.0) -> bool:
        """Poll ``predicate(self)`` every 10 ms until it is true or ``within`` seconds pass.

        Args:
            predicate: E.g. ``lambda f: f.disconnects == 1``.
            within: Seconds to wait at most.

        Returns:
            Whether the predicate became true.
        """
        deadline = time.monotonic() + within
        while not predicate(self):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    # ---- model endpoint ----------------------------------------------------------------------------------------

    async def _handle_model(self, request: web.Request) -> web.StreamResponse:
        match = _ROUTE_RE.match(request.match_info["target"])
        if match is None:
            return web.json_response(_error_body(404, f"Unknown method in {request.path}", None), status=404)
        model, method = match["model"], match["method"]
        raw = await request.read()
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = None
        body: dict[str, Any] = parsed if isinstance(parsed, dict) else {"_raw": raw.decode(errors="replace")}
        headers = {k.lower(): v for k, v in request.headers.items()}
        stream = method == "streamGenerateContent"
        record = {
            **body,
            "model": model,
            "method": method,
            "stream": stream,
            "path": request.path_qs,
            "headers": headers,
            "api_key": headers.get("x-goog-api-key", request.query.get("key")),
        }
        self.requests.append(record)
        queue = self._unary_queue if not stream and self._unary_queue else self._queue
        turn = queue.popleft() if queue else self.default_turn
        reply = turn.stream if stream else turn.unary
        logger.debug("request %d: %s:%s -> %s turn", len(self.requests), model, method, turn.kind)

        headers_out = _SSE_HEADERS if reply.sse else _JSON_HEADERS
        resp = web.StreamResponse(status=reply.status, headers=headers_out)
        if reply.close:
            resp.force_close()
        response_id = f"fake-{next(_response_ids)}"
        self._active[id(request)] = request
        try:
            if reply.sse and reply.status == 200:
                await resp.prepare(request)  # headers first, like Google; then the (delayed) chunks
            await self._play(request, resp, reply, model, response_id)
        except ConnectionResetError:  # includes aiohttp's ClientConnectionResetError and _ClientGoneError
            self._count_disconnect(request, "write failed")
        except asyncio.CancelledError:
            if not self._stopping:
                self._count_disconnect(request, "handler cancelled")
            raise
        else:
            self.completed += 1
        finally:
            self._active.pop(id(request), None)
        return resp

    def _count_disconnect(self, request: web.BaseRequest, how: str) -> None:
        self.disconnects += 1
        logger.info("client went away mid-turn (%s) on %s", how, request.path)

    async def _play(
        self, request: web.BaseRequest, resp: web.StreamResponse, reply: Reply, model: str, response_id: str
    ) -> None:
        for step in reply.steps:
            if isinstance(step, _Abort):
                transport = request.transport
                if transport is not None:
                    transport.abort()
                return
            if isinstance(step, int | float):
                if step > 0:
                    await asyncio.sleep(step)
                continue
            data = self._encode(step, reply.sse, model, response_id)
            transport = request.transport
            if transport is None or transport.is_closing():
                raise _ClientGoneError("client closed the connection")
            if not resp.prepared:
                if not reply.sse and all(not isinstance(s, _Abort) for s in reply.steps):
                    resp.content_length = sum(
                        len(self._encode(s, reply.sse, model, response_id))
                        for s in reply.steps
                        if isinstance(s, bytes | dict)
                    )
                await resp.prepare(request)
            # StreamResponse.write hands the bytes to the transport at once (it only waits for drain above 64 KiB).
            await resp.write(data)
        if not resp.prepared:
            await resp.prepare(request)
        await resp.write_eof()

    @staticmethod
    def _encode(step: bytes | dict[str, Any], sse: bool, model: str, response_id: str) -> bytes:
        if isinstance(step, bytes):
            return step
        if "candidates" in step:
            step = {**step, "modelVersion": model, "responseId": response_id}
        payload = json.dumps(step, separators=(",", ":")).encode()
        return b"data: " + payload + b"\r\n\r\n" if sse else payload

    # ---- control API -------------------------------------------------------------------------------------------

    async def _control_script(self, request: web.Request) -> web.Response:
        """``POST /_control/script``: append turns.

        The body is a JSON list of turn specs (see :func:`turn_from_spec`), or an object
        ``{"turns": [...], "default": spec | null}``, where ``default`` replaces :attr:`default_turn`
        (``null`` restores the initial one).
        """
        try:
            data = await request.json()
            specs = data.get("turns", []) if isinstance(data, dict) else data
            turns = turns_from_spec(specs)
            if isinstance(data, dict) and "default" in data:
                spec = data["default"]
                self.default_turn = self._initial_default if spec is None else turn_from_spec(spec)
        except ValueError as e:  # includes json.JSONDecodeError
            return web.json_response({"error": str(e)}, status=400)
        self.script(*turns)
        return web.json_response({"queued": self.queued})

    async def _control_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})

    async def _control_state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state())

    async def _control_requests(self, request: web.Request) -> web.Response:
        return web.json_response(self.requests)


# --------------------------------------------------------------------------------------------------------------------
# Standalone mode
# --------------------------------------------------------------------------------------------------------------------


async def _serve(args: argparse.Namespace, turns: Sequence[Turn]) -> None:
    default = text_turn(args.default_text)
    fake = FakeGemini(host=args.host, port=args.port, default_turn=default)
    fake.script(*turns)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await fake.start()
    logger.info("%d scripted turns queued; default turn answers %r", fake.queued, default.text)
    try:
        await stop.wait()
    finally:
        logger.info("shutting down: %s", fake.state() | {"last_request": None})
        await fake.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """Run the fake until SIGTERM/SIGINT (``python -m tests.fakes.gemini --port 8089``).

    Args:
        argv: Command-line arguments; ``sys.argv[1:]`` when ``None``.
    """
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.gemini", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089, help="0 picks a free port (logged at startup)")
    parser.add_argument("--script", help="JSON file holding a list of turn specs to queue")
    parser.add_argument("--default-text", default="ok", help="answer used when the queue is empty")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    turns = turns_from_spec(json.loads(Path(args.script).read_text())) if args.script else []
    asyncio.run(_serve(args, turns))


if __name__ == "__main__":
    main()
