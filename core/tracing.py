"""OpenTelemetry tracing, off unless `CRISIS_OTLP_ENDPOINT` is set.

With an endpoint, `tracing_interceptors()` installs a tracer provider that batches spans to
the OTLP/gRPC endpoint and returns Temporal's `TracingInterceptor` for the client (which
the worker inherits): the API's start/update calls, the workflow and every activity become
spans of one trace. `instrument_app()` adds FastAPI's server spans. The packages come with
the `otel` extra (`pip install 'crisis-engine[otel]'`); an endpoint set without them is a
one-line error at start, not a silent no-op.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.config import Settings

if TYPE_CHECKING:
    from temporalio.client import Interceptor

_configured: dict[str, Any] = {}


class TracingUnavailable(Exception):
    """CRISIS_OTLP_ENDPOINT is set but the `otel` extra is not installed (one line)."""


def _provider(settings: Settings, service: str) -> Any:
    if "provider" in _configured:
        return _configured["provider"]
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise TracingUnavailable(
            f"CRISIS_OTLP_ENDPOINT is set but OpenTelemetry is not installed ({exc.name}): "
            "pip install 'crisis-engine[otel]'") from None
    endpoint = settings.otlp_endpoint or ""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(
        endpoint=endpoint, insecure=endpoint.startswith("http://"))))
    trace.set_tracer_provider(provider)
    _configured["provider"] = provider
    return provider


def tracing_interceptors(settings: Settings, service: str) -> list[Interceptor]:
    """Temporal client interceptors that trace, or none when tracing is off."""
    if not settings.otlp_endpoint:
        return []
    _provider(settings, service)
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor()]


def instrument_app(app: Any, settings: Settings) -> None:
    """FastAPI server spans (`POST /incidents`...), when tracing is on."""
    if not settings.otlp_endpoint:
        return
    provider = _provider(settings, "crisis-api")
    try:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    except ImportError as exc:
        raise TracingUnavailable(
            f"CRISIS_OTLP_ENDPOINT is set but {exc.name} is not installed: "
            "pip install 'crisis-engine[otel]'") from None
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider,
                                       excluded_urls="/healthz,/readyz,/metrics",
                                       exclude_spans=["receive", "send"])


def shutdown() -> None:
    """Flush spans still batched (on process exit)."""
    provider = _configured.pop("provider", None)
    if provider is not None:
        provider.shutdown()
