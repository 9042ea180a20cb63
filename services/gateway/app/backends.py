"""Is the cluster behind the gateway up? Polls every backend's Health over
the bus and tells listeners after each check (logging when the overall
answer changes): every ``interval`` seconds while the gateway serves,
every ``interval_down`` while it does not, and every ``STARTING_POLL_S``
until each backend served once.

At start, a call to a backend that has not served yet is held (``hold``,
installed as the gateway bus's ``hold``) until it does, for at most
``hold_s`` seconds from the gateway's start: the port opens at once (health
says NOT_SERVING and why), and the first command after it opens succeeds
instead of finding "no pfs service is serving". A backend still missing
then is logged once; calls to it answer UNAVAILABLE with the reason, as
they do for any backend that goes away later (never held again).

The gateway is SERVING only when NATS is connected and every backend
service answers Health with ``ready``. Each service's entry also says what
its replica sees: its event log (``ok`` or why it refuses to serve: missing,
foreign, emptied ...; the cluster id and last sequence of the stream), its
NATS connection and the free space of its data dir (``degraded`` when low:
still serving).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from nats.aio.client import Client

from libs.api.internal.service_pb2 import HealthRequest, HealthResponse
from libs.bus import Bus
from libs.errors import PachError

BACKENDS: tuple[str, ...] = ("pfs", "pps", "auth", "enterprise", "admin")

Listener = Callable[["BackendMonitor"], Awaitable[None]]

_log = structlog.get_logger("gateway.backends")

STARTING_POLL_S = 0.2


@dataclass(frozen=True)
class BackendStatus:
    service: str
    ok: bool
    detail: str
    replica: str = ""
    version: str = ""
    health: HealthResponse | None = None  # the replica's answer, when it answered

    @property
    def degraded(self) -> bool:
        return self.ok and self.health is not None and self.health.disk_low

    def to_json(self) -> dict[str, Any]:
        status = "degraded" if self.degraded else "ok" if self.ok else "down"
        out: dict[str, Any] = {"status": status, "detail": self.detail}
        if self.replica:
            out["replica"] = self.replica
        if self.version:
            out["version"] = self.version
        h = self.health
        if h is not None:
            if h.event_log:
                out["event_log"] = {
                    "state": h.event_log,
                    "cluster_id": h.cluster_id,
                    "last_seq": h.last_seq,
                    "applied_seq": h.applied_seq,
                }
            out["nats"] = "connected" if h.nats_connected else "disconnected"
            out["disk"] = {"free_bytes": h.disk_free_bytes, "low": h.disk_low}
        return out


class BackendMonitor:
    def __init__(
        self,
        nc: Client,
        bus: Bus,
        backends: tuple[str, ...] = BACKENDS,
        interval: float = 10.0,
        timeout: float = 1.0,
        interval_down: float = 1.0,
        hold_s: float = 60.0,
    ) -> None:
        self._nc = nc
        self._bus = bus
        self.backends = backends
        self.interval = interval
        self.interval_down = interval_down
        self.timeout = timeout
        self.hold_s = hold_s
        self._started = time.monotonic()
        self._served = {name: asyncio.Event() for name in backends}  # served once
        self._hold_over = False
        self.statuses: dict[str, BackendStatus] = {
            name: BackendStatus(name, False, "not checked yet") for name in backends
        }
        self.nats_connected = False
        self._listeners: list[Listener] = []
        self._last_serving: bool | None = None

    @property
    def serving(self) -> bool:
        return self.nats_connected and all(s.ok for s in self.statuses.values())

    async def hold(self, service: str) -> None:
        """Return once ``service`` served once, or when the start's hold
        window is over (at once for any other service)."""
        served = self._served.get(service)
        if served is None or served.is_set():
            return
        left = self.hold_s - (time.monotonic() - self._started)
        if left > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(served.wait(), left)

    def _next_look(self) -> float:
        if all(e.is_set() for e in self._served.values()):
            return self.interval if self.serving else self.interval_down
        if time.monotonic() - self._started < self.hold_s:
            return STARTING_POLL_S
        if not self._hold_over:
            self._hold_over = True
            _log.warning(
                "backends have not served since the gateway started; "
                "calls to them answer UNAVAILABLE",
                waited_s=self.hold_s,
                down={n: s.detail for n, s in self.statuses.items() if not s.ok},
            )
        return self.interval_down

    def on_change(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def snapshot(self) -> dict[str, Any]:
        degraded = any(s.degraded for s in self.statuses.values())
        return {
            "status": ("degraded" if degraded else "ok") if self.serving else "unavailable",
            "nats": "connected" if self.nats_connected else "disconnected",
            "services": {name: s.to_json() for name, s in self.statuses.items()},
        }

    async def _check(self, service: str) -> BackendStatus:
        try:
            reply = await self._bus.request(
                service,
                "Health",
                HealthRequest(),
                HealthResponse,
                kind="qry",
                timeout=self.timeout,
            )
        except PachError as err:
            return BackendStatus(service, False, str(err))
        if not reply.ready:
            return BackendStatus(
                service, False, reply.reason or "not ready", reply.replica, reply.version, reply
            )
        detail = "ready"
        if reply.disk_low:
            detail = f"ready; low disk space ({reply.disk_free_bytes} bytes free)"
        return BackendStatus(service, True, detail, reply.replica, reply.version, reply)

    async def check_once(self) -> bool:
        self.nats_connected = self._nc.is_connected
        if self.nats_connected:
            results = await asyncio.gather(*(self._check(name) for name in self.backends))
            self.statuses = {s.service: s for s in results}
            for s in results:
                if s.ok:
                    self._served[s.service].set()
        else:
            self.statuses = {
                name: BackendStatus(name, False, "NATS is not connected") for name in self.backends
            }
        serving = self.serving
        if serving != self._last_serving:
            _log.info(
                "gateway serving" if serving else "gateway not serving",
                down={n: s.detail for n, s in self.statuses.items() if not s.ok},
            )
            self._last_serving = serving
        for listener in self._listeners:
            await listener(self)
        return serving

    async def run(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                await self.check_once()
            await asyncio.sleep(self._next_look())
