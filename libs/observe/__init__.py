"""Logging and tracing for every process: structlog + OpenTelemetry.

``configure_logging(cfg)`` and ``configure_tracing(name)`` are called once
by ``libs.service.run_service`` (and the cluster launcher); the gateway adds
``GrpcRequestLog`` / ``http_request_log`` for one line and one span per
request.
"""

from __future__ import annotations

from libs.observe.logs import configure_logging, get_logger, wants_json
from libs.observe.requests import GrpcRequestLog, http_request_log
from libs.observe.tracing import add_exporter, configure_tracing

__all__ = [
    "GrpcRequestLog",
    "add_exporter",
    "configure_logging",
    "configure_tracing",
    "get_logger",
    "http_request_log",
    "wants_json",
]
