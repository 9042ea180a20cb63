"""OpenTelemetry setup: spans everywhere, exported only when asked.

``configure_tracing`` installs an SDK ``TracerProvider`` and the W3C
tracecontext propagator (the bus carries it in NATS headers). By default
spans are created and propagated but exported nowhere;
``PACH_TRACE_EXPORTER=console`` prints them. Tests plug an in-memory
exporter with ``add_exporter``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from libs.errors import InvalidArgument

EXPORTERS = ("none", "console")


def configure_tracing(service_name: str, env: Mapping[str, str] | None = None) -> TracerProvider:
    """Install (once per process) and return the SDK tracer provider."""
    e: Mapping[str, str] = os.environ if env is None else env
    exporter_name = e.get("PACH_TRACE_EXPORTER", "") or "none"
    if exporter_name not in EXPORTERS:
        raise InvalidArgument(
            f"PACH_TRACE_EXPORTER must be one of {EXPORTERS}, got {exporter_name!r}",
            name="PACH_TRACE_EXPORTER",
        )
    propagate.set_global_textmap(TraceContextTextMapPropagator())
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        provider = current  # the global provider can be set only once per process
    else:
        provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        trace.set_tracer_provider(provider)
    if exporter_name == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    return provider


def add_exporter(provider: TracerProvider, exporter: SpanExporter) -> None:
    """Export every finished span to ``exporter`` synchronously (tests)."""
    provider.add_span_processor(SimpleSpanProcessor(exporter))
