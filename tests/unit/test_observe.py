"""libs.observe: JSON log lines with service/replica (stdlib logging routed
through structlog), and one trace from a caller's span into a bus handler
over a real nats-server (in-memory span exporter)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog
from nats.aio.client import Client
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from libs.api.internal.service_pb2 import HealthRequest, HealthResponse
from libs.bus import Bus, Context
from libs.config import Config
from libs.errors import InvalidArgument
from libs.observe import add_exporter, configure_logging, configure_tracing, wants_json


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    structlog.reset_defaults()


def test_json_lines_carry_service_and_replica(restore_logging: None) -> None:
    out = io.StringIO()
    configure_logging(Config(service="pfs", replica="3", log_format="json"), stream=out)
    structlog.get_logger("x").info("hello", repo="images")
    logging.getLogger("some.stdlib.lib").warning("from stdlib %s", "logging")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 2
    assert lines[0]["event"] == "hello"
    assert lines[0]["repo"] == "images"
    assert lines[1]["event"] == "from stdlib logging"
    assert lines[1]["level"] == "warning"
    for line in lines:
        assert line["service"] == "pfs"
        assert line["replica"] == "3"
        assert "timestamp" in line


def test_format_auto_follows_the_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert wants_json(Config(log_format="auto"), io.StringIO())
    assert not wants_json(Config(log_format="auto"), Tty())
    assert not wants_json(Config(log_format="console"), io.StringIO())
    assert wants_json(Config(log_format="json"), Tty())


def test_console_format_is_readable(restore_logging: None) -> None:
    out = io.StringIO()
    configure_logging(Config(service="pps", replica="0", log_format="console"), stream=out)
    structlog.get_logger("x").info("job started", job="abc")
    line = out.getvalue().strip()
    assert "job started" in line and "job=abc" in line and "service=pps" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_bad_level_and_exporter_are_typed_errors(restore_logging: None) -> None:
    with pytest.raises(InvalidArgument, match="PACH_LOG_LEVEL"):
        configure_logging(Config(log_level="loud"), stream=io.StringIO())
    with pytest.raises(InvalidArgument, match="PACH_TRACE_EXPORTER"):
        configure_tracing("x", env={"PACH_TRACE_EXPORTER": "jaeger"})


async def test_trace_continues_from_caller_into_bus_handler(nc: Client) -> None:
    provider = configure_tracing("test", env={})
    exporter = InMemorySpanExporter()
    add_exporter(provider, exporter)
    seen: list[int] = []

    async def handler(_: HealthRequest, ctx: Context) -> HealthResponse:
        seen.append(trace.get_current_span().get_span_context().trace_id)
        return HealthResponse(service="pfs", ready=True)

    server = Bus(nc, service="pfs")
    client = Bus(nc, service="gateway")
    await server.serve("Health", HealthRequest, handler, kind="qry")
    try:
        tracer = trace.get_tracer("test")
        with tracer.start_as_current_span("caller") as span:
            caller_trace = span.get_span_context().trace_id
            reply = await client.request(
                "pfs", "Health", HealthRequest(), HealthResponse, kind="qry", timeout=5
            )
    finally:
        await server.close()
    assert reply.ready
    assert seen == [caller_trace]
    names = {s.name: s for s in exporter.get_finished_spans()}
    assert {"caller", "qry.pfs.Health"} <= set(names)
    assert all(s.context.trace_id == caller_trace for s in exporter.get_finished_spans())
