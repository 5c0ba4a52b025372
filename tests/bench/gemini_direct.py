"""Prototype: an Agents SDK `Model` that streams Gemini's REST API directly (no LiteLLM), to measure what it saves.

Used by the bench tweak ``direct_gemini`` (tests/bench/server.py), which swaps it in for `GuardedLitellmModel`.
It covers what the chat path uses: text (and thought-summary) streaming, function calls and their results in the
history, usage, the finish-reason guard (`TruncatedStreamError`), and HTTP/network errors with a ``status_code`` so
the SDK's retry policies and `backend.chat.translate.classify_error` treat them as before.

Not covered (a production version needs them): thought signatures (LiteLLM keeps them in ``provider_data``),
JSON-schema keys Gemini rejects in function declarations (LiteLLM prunes them), safety blocks / prompt feedback,
images and files, structured output (``output_schema``), `get_response` beyond a simple collect.

Per chunk it does one ``json.loads`` and builds one ``ResponseTextDeltaEvent``; per call one request body and one
``Response``. Compare with LiteLLM's per-chunk chunk_creator/pydantic work and its end-of-stream rebuild.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import openai
from agents import FunctionTool, Model, ModelResponse, ModelSettings, Usage
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseCreatedEvent,
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseReasoningSummaryTextDeltaEvent,
    ResponseTextDeltaEvent,
    ResponseUsage,
)
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

from backend.chat.model import TruncatedStreamError

FAKE_ID = "__fake_id__"
DEFAULT_BASE = "https://generativelanguage.googleapis.com/v1beta"


class GeminiHTTPError(Exception):
    """A non-200 answer from Gemini; `status_code` drives the retry policy and the error event."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(f"Gemini HTTP {status_code}: {message[:200]}")
        self.status_code = status_code


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def to_contents(items: str | list[Any]) -> list[dict[str, Any]]:
    """Agents SDK input items → Gemini ``contents`` (consecutive parts of one role merged)."""
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    names: dict[str, str] = {}
    contents: list[dict[str, Any]] = []

    def add(role: str, part: dict[str, Any]) -> None:
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].append(part)
        else:
            contents.append({"role": role, "parts": [part]})

    for item in items:
        item = item if isinstance(item, dict) else item.model_dump(exclude_unset=True)
        kind = item.get("type")
        if kind == "function_call":
            names[item["call_id"]] = item["name"]
            add("model", {"functionCall": {"name": item["name"], "args": json.loads(item.get("arguments") or "{}")}})
        elif kind == "function_call_output":
            output = item.get("output")
            add(
                "user",
                {
                    "functionResponse": {
                        "name": names.get(item["call_id"], ""),
                        "response": {"content": output if isinstance(output, str) else json.dumps(output)},
                    }
                },
            )
        elif kind in (None, "message") and item.get("role") in ("user", "assistant", "system", "developer"):
            text = _text_of(item.get("content"))
            if text:
                add("model" if item["role"] == "assistant" else "user", {"text": text})
        # reasoning items and anything else: not replayed
    return contents


def _declaration(tool: FunctionTool) -> dict[str, Any]:
    def clean(schema: Any) -> Any:
        if isinstance(schema, dict):
            return {k: clean(v) for k, v in schema.items() if k not in ("additionalProperties", "title", "$schema")}
        if isinstance(schema, list):
            return [clean(v) for v in schema]
        return schema

    return {"name": tool.name, "description": tool.description, "parameters": clean(tool.params_json_schema)}


_sessions: dict[Any, aiohttp.ClientSession] = {}


async def close_sessions() -> None:
    """Close the shared sessions (at shutdown)."""
    for session in list(_sessions.values()):
        await session.close()
    _sessions.clear()


class GeminiDirectModel(Model):
    """Streams ``:streamGenerateContent?alt=sse`` with one shared aiohttp session per event loop."""

    def __init__(self, model: str, base_url: str | None, api_key: str | None) -> None:
        self.model = model.removeprefix("gemini/")
        self.base_url = (base_url or DEFAULT_BASE).rstrip("/")
        self.api_key = api_key or ""

    def _client(self) -> aiohttp.ClientSession:
        import asyncio

        loop = asyncio.get_running_loop()
        session = _sessions.get(loop)
        if session is None or session.closed:
            session = _sessions[loop] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=1000, limit_per_host=500)
            )
        return session

    def _body(self, system: str | None, input: Any, settings: ModelSettings, tools: list[Any]) -> dict[str, Any]:
        body: dict[str, Any] = {"contents": to_contents(input)}
        if system:
            body["systemInstruction"] = {"parts": [{"text": system}]}
        declarations = [_declaration(t) for t in tools if isinstance(t, FunctionTool)]
        if declarations:
            body["tools"] = [{"functionDeclarations": declarations}]
        config: dict[str, Any] = {}
        if settings.temperature is not None:
            config["temperature"] = settings.temperature
        if settings.top_p is not None:
            config["topP"] = settings.top_p
        if settings.max_tokens is not None:
            config["maxOutputTokens"] = settings.max_tokens
        if config:
            body["generationConfig"] = config
        return body

    async def get_response(
        self,
        system_instructions: str | None,
        input: Any,
        model_settings: ModelSettings,
        tools: list[Any],
        output_schema: Any,
        handoffs: list[Any],
        tracing: Any,
        **kwargs: Any,
    ) -> ModelResponse:
        """Collect the stream (the chat path only streams)."""
        final: Response | None = None
        async for event in self.stream_response(
            system_instructions, input, model_settings, tools, output_schema, handoffs, tracing, **kwargs
        ):
            if isinstance(event, ResponseCompletedEvent):
                final = event.response
        assert final is not None
        usage = final.usage
        return ModelResponse(
            output=final.output,
            usage=Usage(
                requests=1,
                input_tokens=usage.input_tokens if usage else 0,
                output_tokens=usage.output_tokens if usage else 0,
                total_tokens=usage.total_tokens if usage else 0,
            ),
            response_id=None,
        )

    async def stream_response(  # type: ignore[override]
        self,
        system_instructions: str | None,
        input: Any,
        model_settings: ModelSettings,
        tools: list[Any],
        output_schema: Any,
        handoffs: list[Any],
        tracing: Any,
        **kwargs: Any,
    ) -> AsyncIterator[Any]:
        """Yield ``response.created``, text (and thought) deltas, then ``response.completed`` with the items."""
        url = f"{self.base_url}/models/{self.model}:streamGenerateContent?alt=sse"
        body = self._body(system_instructions, input, model_settings, tools)
        seq = 0
        response = Response.model_construct(
            id=FAKE_ID,
            created_at=0,
            model=self.model,
            object="response",
            output=[],
            tool_choice="auto",
            tools=[],
            parallel_tool_calls=False,
        )
        yield ResponseCreatedEvent(type="response.created", response=response, sequence_number=seq)
        text_parts: list[str] = []
        calls: list[ResponseFunctionToolCall] = []
        usage_meta: dict[str, Any] = {}
        finished = False
        try:
            limit = (model_settings.extra_args or {}).get("timeout")
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=limit) if limit else None
            async with self._client().post(
                url, json=body, headers={"x-goog-api-key": self.api_key}, timeout=timeout
            ) as resp:
                if resp.status != 200:
                    raise GeminiHTTPError(resp.status, await resp.text())
                async for line in resp.content:
                    if not line.startswith(b"data:"):
                        continue
                    try:
                        event = json.loads(line[5:])
                    except ValueError:
                        continue  # a cut-off last line; the finish-reason check below decides
                    if "error" in event:
                        error = event["error"]
                        raise GeminiHTTPError(int(error.get("code") or 500), str(error.get("message")))
                    usage_meta = event.get("usageMetadata") or usage_meta
                    for candidate in event.get("candidates") or ():
                        if candidate.get("finishReason"):
                            finished = True
                        for part in (candidate.get("content") or {}).get("parts") or ():
                            text = part.get("text")
                            if text and part.get("thought"):
                                seq += 1
                                yield ResponseReasoningSummaryTextDeltaEvent(
                                    type="response.reasoning_summary_text.delta",
                                    item_id=FAKE_ID,
                                    output_index=0,
                                    summary_index=0,
                                    delta=text,
                                    sequence_number=seq,
                                )
                            elif text:
                                text_parts.append(text)
                                seq += 1
                                yield ResponseTextDeltaEvent(
                                    type="response.output_text.delta",
                                    item_id=FAKE_ID,
                                    output_index=0,
                                    content_index=0,
                                    delta=text,
                                    logprobs=[],
                                    sequence_number=seq,
                                )
                            elif "functionCall" in part:
                                call = part["functionCall"]
                                calls.append(
                                    ResponseFunctionToolCall(
                                        type="function_call",
                                        call_id=f"call_{uuid.uuid4().hex[:24]}",
                                        name=call["name"],
                                        arguments=json.dumps(call.get("args") or {}),
                                        status="completed",
                                    )
                                )
        except (aiohttp.ClientError, TimeoutError) as e:
            raise openai.APIConnectionError(
                message=f"Gemini connection error: {e!r}", request=httpx.Request("POST", url)
            ) from e
        if not finished:
            raise TruncatedStreamError("the model stream ended without a finish reason")
        output: list[Any] = []
        if text_parts:
            output.append(
                ResponseOutputMessage(
                    id=FAKE_ID,
                    type="message",
                    role="assistant",
                    status="completed",
                    content=[ResponseOutputText(type="output_text", text="".join(text_parts), annotations=[])],
                )
            )
        output.extend(calls)
        prompt = int(usage_meta.get("promptTokenCount") or 0)
        completion = int(usage_meta.get("candidatesTokenCount") or 0) + int(usage_meta.get("thoughtsTokenCount") or 0)
        usage = ResponseUsage(
            input_tokens=prompt,
            output_tokens=completion,
            total_tokens=prompt + completion,
            input_tokens_details=InputTokensDetails(
                cached_tokens=int(usage_meta.get("cachedContentTokenCount") or 0), cache_write_tokens=0
            ),
            output_tokens_details=OutputTokensDetails(reasoning_tokens=int(usage_meta.get("thoughtsTokenCount") or 0)),
        )
        final = response.model_copy(update={"output": output, "usage": usage, "status": "completed"})
        yield ResponseCompletedEvent(type="response.completed", response=final, sequence_number=seq + 1)
