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
import os
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
from libs.bus import guard as guard_sizes
from libs.config import NATS_CREDENTIAL_VARS, Config
from libs.errors import PachError, Unavailable
from libs.events import background
from libs.log_guard import IDENTITY_OK, GuardSettings, LogGuard, disk_free
from libs.observe import configure_logging, configure_tracing
from libs.restore_gate import ClusterView, ReactionGate

Setup = Callable[["ServiceContext"], Awaitable[None]]

# How long a starting replica waits for its read models to apply the log.
CATCH_UP_S = 120.0


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

    async def catch_up(self, timeout: float = CATCH_UP_S) -> None:
        """Wait until the read models (``watch_applied``) applied the event
        log as it is now, before the service answers anything: a replica
        back from a crash must not answer from the read model it had while
        another replica serves a newer one (reads would go back in time).
        Past ``timeout`` it serves anyway, and says so."""
        try:
            info = await self.js.stream_info(self.config.events_stream)
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            self.log.warning("cannot see the event log's end: serving as is", error=repr(exc))
            return
        last = int(info.state.last_seq or 0)
        deadline = asyncio.get_running_loop().time() + timeout
        while self.applied_seq() < last:
            if asyncio.get_running_loop().time() > deadline:
                self.log.warning(
                    "read models still catching up: serving as is",
                    applied=self.applied_seq(),
                    log_end=last,
                )
                return
            await asyncio.sleep(0.05)

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


class ConnectionLost(Unavailable):
    """NATS closed this process's connection for good (the server refused
    something, or credentials stopped working): the process ends non-zero
    so its supervisor starts it again rather than leaving it deaf."""

    code = "nats_connection_lost"


# After the connection is lost, the process ends within this many seconds
# even if closing its resources hangs.
EXIT_AFTER_LOSS_S = 10.0


async def connect_nats(
    cfg: Config,
    log: structlog.stdlib.BoundLogger,
    stop: asyncio.Event,
    lost: asyncio.Event | None = None,
) -> Client:
    """Connect, retrying (with backoff) until NATS answers or ``stop`` is set;
    afterwards the client reconnects forever on its own. With
    ``cfg.nats_user`` it connects as that user, with replies under its own
    inbox prefix (``_INBOX.<user>``, all the user may subscribe to). If the
    connection is closed for good (nats-server closes it after a protocol
    error; nats-py then never reconnects) while ``stop`` is not set,
    ``lost`` and ``stop`` are set."""

    async def on_disconnect() -> None:
        if not stop.is_set():  # draining on shutdown disconnects on purpose
            log.warning("nats disconnected", url=cfg.nats_url)

    async def on_reconnect() -> None:
        log.info("nats reconnected", url=cfg.nats_url)
        background.reconnected()  # long fetches ask again on the new connection

    async def on_error(exc: Exception) -> None:
        if "permissions violation" in str(exc).lower():
            # this process's NATS user may not do what it tried: a bug or a
            # permission list (programs/cluster/credentials.py) out of date
            log.warning("nats refused", error=str(exc), user=cfg.nats_user)
        else:
            log.debug("nats error", error=str(exc))

    async def on_closed() -> None:
        if stop.is_set() and (lost is None or not lost.is_set()):
            return  # closed on purpose, shutting down
        log.error("nats connection closed for good; ending the process", url=cfg.nats_url)
        if lost is not None:
            lost.set()
        stop.set()

    auth: dict[str, Any] = {}
    if cfg.nats_user:
        auth = {
            "user": cfg.nats_user,
            "password": cfg.nats_password,
            "inbox_prefix": f"_INBOX.{cfg.nats_user}",
        }
    delay = 0.1
    while True:
        # The first connect gives up after one retry, so this loop (which
        # honours ``stop``) does the waiting: with unlimited reconnects
        # nats-py would retry the first connect forever by itself. Once
        # connected, reconnects are unlimited (nats-py reads the option
        # when it reconnects).
        try:
            nc = await nats.connect(
                # every node of a NATS cluster (comma-separated): it fails over
                [u.strip() for u in cfg.nats_url.split(",") if u.strip()],
                name=f"{cfg.service}-{cfg.replica}",
                max_reconnect_attempts=1,
                reconnect_time_wait=0.5,
                connect_timeout=2,
                allow_reconnect=True,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
                error_cb=on_error,
                closed_cb=on_closed,
                **auth,
            )
            nc.options["max_reconnect_attempts"] = -1
            return guard_sizes(nc)
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
UNGUARDED: tuple[str, ...] = ("gateway", "pps-worker")
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


async def serve(
    name: str, setup: Setup, cfg: Config, stop: asyncio.Event, lost: asyncio.Event | None = None
) -> None:
    """Run one service until ``stop`` is set (the testable core of run_service).
    ``ConnectionLost`` if NATS closed the connection for good (``lost`` is
    set then)."""
    log: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    lost = asyncio.Event() if lost is None else lost
    async with AsyncExitStack() as stack:
        nc = await connect_nats(cfg, log, stop, lost)
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
        if lost.is_set():
            # Deaf: end non-zero so the supervisor starts a new process.
            raise ConnectionLost(f"{name}: the NATS connection to {cfg.nats_url} was closed")
        log.info("service stopping: draining")
        # Stop taking requests and let in-flight handlers finish *before*
        # the stack closes what they use (read models, projections).
        await bus.close()
    log.info("service stopped")


async def _main(name: str, setup: Setup, cfg: Config) -> None:
    stop = asyncio.Event()
    lost = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def exit_if_lost() -> None:
        # A process whose connection is gone ends non-zero within
        # EXIT_AFTER_LOSS_S, even if closing its resources (or a setup still
        # waiting on NATS) hangs.
        await lost.wait()
        await asyncio.sleep(EXIT_AFTER_LOSS_S)
        os._exit(3)

    watchdog = asyncio.create_task(exit_if_lost())
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await serve(name, setup, cfg, stop, lost)
    finally:
        watchdog.cancel()
    if lost.is_set():
        raise ConnectionLost(f"{name}: the NATS connection to {cfg.nats_url} was closed")


def run_service(name: str, setup: Setup, argv: list[str] | None = None) -> None:
    """Entry point of ``python -m services.<name>``; exits the process."""
    del argv  # services take their settings from the environment only
    try:
        cfg = Config.from_env(name)
        # Read once into the config; nothing this process starts inherits
        # its NATS credential (pps hands workers their own: worker_env).
        for var in NATS_CREDENTIAL_VARS:
            os.environ.pop(var, None)
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
