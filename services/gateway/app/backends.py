"""Is the cluster behind the gateway up? Polls every backend's Health over
the bus every ``interval`` seconds and tells listeners after each check
(logging when the overall answer changes).

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
        interval: float = 2.0,
        timeout: float = 1.0,
    ) -> None:
        self._nc = nc
        self._bus = bus
        self.backends = backends
        self.interval = interval
        self.timeout = timeout
        self.statuses: dict[str, BackendStatus] = {
            name: BackendStatus(name, False, "not checked yet") for name in backends
        }
        self.nats_connected = False
        self._listeners: list[Listener] = []
        self._last_serving: bool | None = None

    @property
    def serving(self) -> bool:
        return self.nats_connected and all(s.ok for s in self.statuses.values())

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

    async def wait_serving(self, within: float, poll: float = 0.2) -> bool:
        """Check until every backend serves (True) or ``within`` seconds
        passed (False, logged with what is down)."""
        deadline = time.monotonic() + within
        while not await self.check_once():
            if time.monotonic() >= deadline:
                _log.warning(
                    "backends not serving; listening anyway (calls answer UNAVAILABLE until they do)",
                    waited_s=within,
                    down={n: s.detail for n, s in self.statuses.items() if not s.ok},
                )
                return False
            await asyncio.sleep(poll)
        return True

    async def run(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                await self.check_once()
            await asyncio.sleep(self.interval)
