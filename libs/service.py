"""The one runner every service's ``__main__`` uses.

``run_service(name, setup)`` reads ``Config.from_env(name)``, configures
logging and tracing, connects to NATS (retrying until it is up, then
reconnecting forever), serves ``qry.<name>.Health`` on the bus, runs
``setup(ctx)`` so the service registers its handlers and consumers, and
waits. SIGTERM or SIGINT closes the ``AsyncExitStack`` in reverse order:
the bus drains (no new requests; in-flight ones finish), then the NATS
connection drains, and the process exits 0.

Every replica of a service runs the same code; the bus serves in a queue
group named after the service, so replicas share the load.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, Protocol

import nats
import nats.errors
import structlog
import uvloop
from nats.aio.client import Client
from nats.js import JetStreamContext

from libs import version
from libs.api.internal.service_pb2 import HealthRequest, HealthResponse
from libs.bus import Bus, Context
from libs.config import Config
from libs.errors import PachError, Unavailable
from libs.log_guard import IDENTITY_OK, GuardSettings, LogGuard, disk_free
from libs.observe import configure_logging, configure_tracing
from libs.restore_gate import ClusterView, ReactionGate

Setup = Callable[["ServiceContext"], Awaitable[None]]


class HasPosition(Protocol):
    """A read model's progress: the last event-log sequence it applied
    (``ProjectionRunner.position``)."""

    @property
    def position(self) -> int: ...


@dataclass
class ServiceContext:
    """What ``setup`` gets: the config and the process's open resources.

    Anything ``setup`` opens goes on ``stack`` so it is closed on shutdown
    (before NATS drains)."""

    config: Config
    nc: Client
    js: JetStreamContext
    bus: Bus
    stack: AsyncExitStack
    log: structlog.stdlib.BoundLogger
    ready: bool = False
    not_ready_reason: str = "starting"
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    read_models: list[HasPosition] = field(default_factory=list)
    log_guard: LogGuard | None = None
    guard_settings: GuardSettings = field(default_factory=GuardSettings)
    _gate: ReactionGate | None = None

    def watch_applied(self, *runners: HasPosition) -> None:
        """Count these read models in Health's ``applied_seq`` (the lowest
        of their positions): how far this replica applied the event log."""
        self.read_models.extend(runners)

    def applied_seq(self) -> int:
        return min((r.position for r in self.read_models), default=0)

    def _log_served(self) -> bool:
        return self.log_guard is None or self.log_guard.ok

    async def restore_gate(self) -> ReactionGate:
        """This process's restore gate (one per process, started on first
        use, stopped with ``stack``): reactions, masters and cron ticks wait
        on it while a restore runs, and after one until this process's read
        models (``watch_applied``) applied the restored log."""
        if self._gate is None:
            state = await ClusterView.open(self.js, replicas=self.config.events_replicas)
            gate = ReactionGate(
                state,
                stream=self.config.events_stream,
                applied=self.applied_seq,
                log_ok=self._log_served,
            )
            await gate.start()
            self.stack.push_async_callback(gate.stop)
            self._gate = gate
        return self._gate


async def connect_nats(
    cfg: Config, log: structlog.stdlib.BoundLogger, stop: asyncio.Event
) -> Client:
    """Connect, retrying (with backoff) until NATS answers or ``stop`` is set;
    afterwards the client reconnects forever on its own."""

    async def on_disconnect() -> None:
        if not stop.is_set():  # draining on shutdown disconnects on purpose
            log.warning("nats disconnected", url=cfg.nats_url)

    async def on_reconnect() -> None:
        log.info("nats reconnected", url=cfg.nats_url)

    async def on_error(exc: Exception) -> None:
        log.debug("nats error", error=str(exc))

    delay = 0.1
    while True:
        # The first connect gives up after one retry, so this loop (which
        # honours ``stop``) does the waiting: with unlimited reconnects
        # nats-py would retry the first connect forever by itself. Once
        # connected, reconnects are unlimited (nats-py reads the option
        # when it reconnects).
        try:
            nc = await nats.connect(
                cfg.nats_url,
                name=f"{cfg.service}-{cfg.replica}",
                max_reconnect_attempts=1,
                reconnect_time_wait=0.5,
                connect_timeout=2,
                allow_reconnect=True,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
                error_cb=on_error,
            )
            nc.options["max_reconnect_attempts"] = -1
            return nc
        except (OSError, nats.errors.Error) as exc:
            log.warning("nats not reachable yet", url=cfg.nats_url, error=str(exc) or repr(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        if stop.is_set():
            raise asyncio.CancelledError
        delay = min(delay * 2, 2.0)


async def _drain(nc: Client) -> None:
    with contextlib.suppress(nats.errors.Error, OSError):
        await nc.drain()


# What admin serves while the log is lost: the way to bring it back.
ADMIN_EXEMPT: tuple[str, ...] = ("cmd.admin.Restore", "qry.admin.InspectCluster")
# Processes that serve whatever state the log is in (the gateway reports it).
UNGUARDED: tuple[str, ...] = ("gateway",)
_HEALTH_CHECK_S = 0.8


def _health_handler(
    ctx: ServiceContext,
) -> Callable[[HealthRequest, Context], Awaitable[HealthResponse]]:
    async def health(_: HealthRequest, __: Context) -> HealthResponse:
        guard = ctx.log_guard
        if guard is not None and ctx.ready:
            # A fresh look (shielded: a slow check finishes in the background).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(guard.check()), _HEALTH_CHECK_S)
        ready = ctx.ready and not ctx.stopping.is_set()
        reason = "" if ctx.ready else ctx.not_ready_reason
        reply = HealthResponse(
            service=ctx.config.service,
            replica=ctx.config.replica,
            version=version.pretty(),
            nats_connected=ctx.nc.is_connected,
        )
        log_ok = True
        if guard is not None:
            state = guard.current
            log_ok = state.state == "ok"
            reply.event_log = state.state
            if state.identity is not None:
                reply.cluster_id = state.identity.cluster_id
                reply.last_seq = state.identity.last_seq
            if state.error is not None and ctx.ready:
                reason = str(state.error)
        reply.ready = ready and log_ok
        reply.reason = reason
        reply.applied_seq = ctx.applied_seq() if log_ok else 0
        free = disk_free(ctx.config.data_dir)
        reply.disk_free_bytes = free
        reply.disk_low = free < ctx.guard_settings.disk_low_bytes
        return reply

    return health


async def _guard_start(name: str, ctx: ServiceContext, stop: asyncio.Event) -> LogGuard | None:
    """The service's log guard; before setup, wait while the log is missing
    or another cluster's (answering every command with why)."""
    if name in UNGUARDED:
        return None
    cfg = ctx.config
    guard = LogGuard(
        ctx.js,
        cfg.events_stream,
        read_models=lambda: ctx.read_models,
        replicas=cfg.events_replicas,
        exempt=ADMIN_EXEMPT if name == "admin" else (),
        interval=ctx.guard_settings.interval_s,
    )
    ctx.log_guard = guard
    if name == "admin":  # admin creates the log (first start) or restores it
        return guard
    state = await guard.check()
    if state.state not in IDENTITY_OK:
        ctx.not_ready_reason = str(state.error)
        ctx.log.error("not serving: event log", state=state.state, error=str(state.error))

        def why() -> PachError:
            return guard.current.error or Unavailable(f"{name} is starting")

        refusal = await ctx.bus.refuse("cmd", why)
        await guard.wait_identity(stop)
        await ctx.bus.unserve(refusal)
        if stop.is_set():
            raise asyncio.CancelledError
        ctx.not_ready_reason = "starting"
    return guard


async def serve(name: str, setup: Setup, cfg: Config, stop: asyncio.Event) -> None:
    """Run one service until ``stop`` is set (the testable core of run_service)."""
    log: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    async with AsyncExitStack() as stack:
        nc = await connect_nats(cfg, log, stop)
        stack.push_async_callback(_drain, nc)
        bus = Bus(
            nc,
            service=name,
            max_message_bytes=cfg.max_message_bytes,
            timeout=cfg.request_timeout_s,
        )
        stack.push_async_callback(bus.close)
        ctx = ServiceContext(
            config=cfg, nc=nc, js=nc.jetstream(), bus=bus, stack=stack, log=log, stopping=stop
        )
        ctx.guard_settings = GuardSettings.from_env()
        await bus.serve("Health", HealthRequest, _health_handler(ctx), kind="qry", quiet=True)
        guard = await _guard_start(name, ctx, stop)
        if guard is not None:
            bus.admission = guard.admit
        await setup(ctx)
        if guard is not None:
            await guard.check()
            guard.start()
            stack.push_async_callback(guard.stop)
        ctx.ready = True
        log.info("service started", nats=cfg.nats_url)
        await stop.wait()
        log.info("service stopping: draining")
        # Stop taking requests and let in-flight handlers finish *before*
        # the stack closes what they use (read models, projections).
        await bus.close()
    log.info("service stopped")


async def _main(name: str, setup: Setup, cfg: Config) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(asyncio.CancelledError):
        await serve(name, setup, cfg, stop)


def run_service(name: str, setup: Setup, argv: list[str] | None = None) -> None:
    """Entry point of ``python -m services.<name>``; exits the process."""
    del argv  # services take their settings from the environment only
    try:
        cfg = Config.from_env(name)
        configure_logging(cfg)
        configure_tracing(name)
    except PachError as err:
        print(f"{name}: {err}", file=sys.stderr)
        sys.exit(2)
    log: Any = structlog.get_logger(name)
    try:
        # uvloop: about half the event-loop overhead of asyncio's own loop on
        # the NATS request/reply path (see docs/decisions/0005-event-log.md).
        uvloop.run(_main(name, setup, cfg))
    except PachError as err:
        log.error("service failed", error=str(err), error_type=type(err).__name__)
        sys.exit(1)
    sys.exit(0)
