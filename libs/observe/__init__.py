"""Logging and tracing for every process: structlog + OpenTelemetry.

``configure_logging(cfg)`` and ``configure_tracing(name)`` are called once
by ``libs.service.run_service`` (and the cluster launcher); the gateway adds
``GrpcRequestLog`` / ``http_request_log`` for one line and one span per
request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from libs.observe.logs import configure_logging, get_logger, wants_json
from libs.observe.tracing import add_exporter, configure_tracing

if TYPE_CHECKING:
    from libs.observe.requests import GrpcRequestLog, http_request_log


def __getattr__(name: str) -> Any:
    # The request logging needs grpc and aiohttp's server, which only the
    # gateway runs: every other process starts without importing them.
    if name in ("GrpcRequestLog", "http_request_log"):
        from libs.observe import requests

        return getattr(requests, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "GrpcRequestLog",
    "add_exporter",
    "configure_logging",
    "configure_tracing",
    "get_logger",
    "http_request_log",
    "wants_json",
]
