"""OpenTelemetry traces, optional (`uv sync --extra otel`) and off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

Spans: one per HTTP request (Litestar's OpenTelemetry plugin), one per turn segment (`chat turn`), and under it one
per model call (`chat {model}`), tool call (`execute_tool {name}`, MCP tools included) and handoff
(`handoff {from} -> {to}`), with the OpenTelemetry GenAI semantic conventions' `gen_ai.*` attributes. Message
contents are never recorded. The spans come from our own seams (the turn, and the Agents SDK's public `RunHooks`);
the SDK's own tracing stays off (`OPENAI_AGENTS_DISABLE_TRACING`), so nothing goes to OpenAI.

The code below uses only `opentelemetry-api` (a dependency of the Agents SDK): without a configured provider its
spans are no-ops that cost next to nothing.
"""

from __future__ import annotations

import logging
import os

from litestar.plugins import PluginProtocol
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

log = logging.getLogger(__name__)

ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
tracer = trace.get_tracer("backend")


def enabled() -> bool:
    """Whether traces are to be exported (the standard endpoint variable is set)."""
    return bool(os.environ.get(ENDPOINT_ENV))


def configure() -> bool:
    """Install an OTLP/HTTP exporter as the global tracer provider, once per process, when enabled.

    Returns:
        True when traces are exported; False when off or the `otel` extra is not installed (logged).
    """
    if not enabled():
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("%s is set but the otel extra is not installed (uv sync --extra otel); no traces", ENDPOINT_ENV)
        return False
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return True
    provider = TracerProvider(
        resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "chatkit")})
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return True


def http_plugins() -> list[PluginProtocol]:
    """Litestar's OpenTelemetry plugin (a span per HTTP request) when traces are exported, else nothing."""
    if not enabled():
        return []
    try:
        from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
    except ImportError:  # opentelemetry-instrumentation-asgi comes with the otel extra
        return []
    return [OpenTelemetryPlugin(OpenTelemetryConfig())]


def end_span(span: Span, error: str | None = None) -> None:
    """End a span, marked as failed with `error.type` when `error` names what went wrong."""
    if error is not None:
        span.set_attribute("error.type", error)
        span.set_status(Status(StatusCode.ERROR))
    span.end()
