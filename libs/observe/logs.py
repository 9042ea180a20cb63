"""structlog setup: JSON lines in a cluster, readable lines on a terminal.

Every line carries ``service`` and ``replica``; lines logged inside a span
also carry ``trace_id`` and ``span_id``. The standard library's ``logging``
(grpc, aiohttp, nats) is routed through the same renderer, so a process
writes one format only.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
from opentelemetry import trace
from structlog.typing import EventDict, Processor, WrappedLogger

from libs.config import Config
from libs.errors import InvalidArgument

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _static_fields(service: str, replica: str) -> Processor:
    def add(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
        event.setdefault("service", service)
        event.setdefault("replica", replica)
        return event

    return add


def _trace_ids(_: WrappedLogger, __: str, event: MutableMapping[str, Any]) -> EventDict:
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event.setdefault("trace_id", format(ctx.trace_id, "032x"))
        event.setdefault("span_id", format(ctx.span_id, "016x"))
    return event  # type: ignore[return-value]


def wants_json(cfg: Config, stream: TextIO) -> bool:
    if cfg.log_format == "json":
        return True
    if cfg.log_format == "console":
        return False
    isatty = getattr(stream, "isatty", None)
    return not (callable(isatty) and isatty())


def configure_logging(cfg: Config, stream: TextIO | None = None) -> None:
    """Configure structlog and stdlib logging for this process (idempotent:
    a second call replaces the first)."""
    out = sys.stdout if stream is None else stream
    level = _LEVELS.get(cfg.log_level.lower())
    if level is None:
        raise InvalidArgument(
            f"PACH_LOG_LEVEL must be one of {sorted(_LEVELS)}, got {cfg.log_level!r}",
            name="PACH_LOG_LEVEL",
        )
    json_lines = wants_json(cfg, out)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _static_fields(cfg.service, cfg.replica),
        _trace_ids,
    ]
    renderer: Processor
    if json_lines:
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)

    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Chatty libraries stay at warning unless we debug.
    for noisy in ("asyncio", "aiohttp.access", "grpc"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str | None = None, **fields: Any) -> structlog.stdlib.BoundLogger:
    log: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return log.bind(**fields) if fields else log
