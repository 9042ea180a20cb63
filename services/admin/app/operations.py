"""What admin does on request: extract, restore, inspect-cluster.

The extract/restore engine (``extract.py``, ``restore.py``) reads and
appends the event log and the object store itself; the gateway only moves
bytes between its client and the parts of a session (``sessions.py``).
A ``-u`` URL is admin's own I/O (``adapters/backup_urls.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from nats.aio.client import Client

from libs import transfer
from libs.api.internal import admin_service_pb2 as msg
from libs.bus import Bus, Context
from libs.config import Config
from libs.objects.base import ObjectStore
from services.admin.adapters.backup_urls import parse_backup_url, read_url, write_url
from services.admin.adapters.cluster_state import ClusterState
from services.admin.app.extract import extract_frames
from services.admin.app.restore import RestoreSummary, restore_frames
from services.admin.app.sessions import IDLE_S, ExtractSession, RestoreSession
from services.admin.app.wait_applied import wait_applied
from services.admin.domain.catalog import cluster_registry

_log = structlog.get_logger("admin")

# The services whose read models a restore waits for.
RESTORED_SERVICES = ("pfs", "pps")
DEFAULT_WAIT_S = 3600.0
STALE_S = 3600.0  # transfer parts older than this belong to no live session

Session = ExtractSession | RestoreSession


@dataclass
class Admin:
    nc: Client
    bus: Bus
    cfg: Config
    state: ClusterState
    store: ObjectStore  # the cluster's objects
    transfers: ObjectStore  # scratch parts
    sessions: dict[str, tuple[Session, Any]] = field(default_factory=dict)
    _reaper: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap_forever(), name="admin session reaper")

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for sid in list(self.sessions):
            await self._end(sid)

    # --- queries ---------------------------------------------------------------

    async def cluster_id(self) -> str:
        return await self.state.cluster_id()

    # --- extract ---------------------------------------------------------------

    def _frames(self, objects: bool, cluster_id: str) -> AsyncIterator[bytes]:
        return extract_frames(
            self.nc.jetstream(),
            self.store,
            cluster_registry(),
            stream=self.cfg.events_stream,
            cluster_id=cluster_id,
            objects=objects,
        )

    async def extract(self, request: msg.ExtractStart, _: Context) -> msg.ExtractStarted:
        cid = await self.cluster_id()
        if request.url:
            backups = self.cfg.backup_dir
            parse_backup_url(request.url, backups)  # a bad URL fails before anything is read
            await asyncio.to_thread(backups.mkdir, mode=0o700, parents=True, exist_ok=True)
            written = await write_url(
                request.url, self._frames(request.objects, cid), self.cfg.objects, backups
            )
            return msg.ExtractStarted(bytes=written)
        session = ExtractSession(self.transfers)
        parts = await self._open(session, "ExtractParts", msg.ExtractPartsRequest, self._parts)
        session.start(self._frames(request.objects, cid))
        _log.info("extract session started", session=session.id)
        return msg.ExtractStarted(id=session.id, parts=parts)

    async def _parts(
        self, session: ExtractSession, request: msg.ExtractPartsRequest
    ) -> msg.ExtractParts:
        if request.cancel:
            await self._end(session.id)
            return msg.ExtractParts(done=True)
        try:
            keys, done = await session.next(request.consumed, request.have)
        except BaseException:
            await self._end(session.id)
            raise
        if done:
            await self._end(session.id)  # every part handed out: the reader deletes them
        return msg.ExtractParts(keys=keys, done=done)

    # --- restore ---------------------------------------------------------------

    async def _restore(self, data: AsyncIterator[bytes], timeout: float) -> RestoreSummary:
        spool = Path(self.cfg.data_dir) / "restore-spool"
        await asyncio.to_thread(spool.mkdir, parents=True, exist_ok=True)
        summary = await restore_frames(
            self.nc,
            self.store,
            data,
            registry=cluster_registry(),
            spool_dir=spool,
            stream=self.cfg.events_stream,
            stream_config=self.cfg,
            kv_replicas=self.cfg.events_replicas,
        )
        await wait_applied(self.bus, summary.last_seq, RESTORED_SERVICES, timeout=timeout)
        return summary

    async def restore(self, request: msg.RestoreStart, _: Context) -> msg.RestoreStarted:
        timeout = request.timeout_s or DEFAULT_WAIT_S
        if request.url:
            parse_backup_url(request.url, self.cfg.backup_dir)
            data = read_url(request.url, self.cfg.objects, self.cfg.backup_dir)
            summary = await self._restore(data, timeout)
            return msg.RestoreStarted(done=_done(summary))
        session = RestoreSession(self.transfers)
        parts = await self._open(session, "RestoreParts", msg.RestoreParts, self._take)

        async def run(data: AsyncIterator[bytes]) -> RestoreSummary:
            return await self._restore(data, timeout)

        session.start(run)
        _log.info("restore session started", session=session.id)
        return msg.RestoreStarted(id=session.id, parts=parts)

    async def _take(self, session: RestoreSession, request: msg.RestoreParts) -> msg.RestoreDone:
        if request.cancel:
            await self._end(session.id)
            return msg.RestoreDone()
        try:
            result = await session.add(list(request.keys), request.last)
        except BaseException:
            await self._end(session.id)
            raise
        if result is None:
            return msg.RestoreDone()
        await self._end(session.id)
        assert isinstance(result, RestoreSummary)
        return _done(result)

    # --- sessions --------------------------------------------------------------

    async def _open(
        self,
        session: Any,
        name: str,
        request_type: Any,
        handler: Callable[[Any, Any], Awaitable[Any]],
    ) -> str:
        """Serve ``cmd.admin.<name>_<id>`` for ``session`` on this replica
        only (the session lives here); the bus name it answers."""
        bus_name = f"{name}_{session.id}"

        async def serve(request: Any, _: Context) -> Any:
            session.busy += 1
            try:
                return await handler(session, request)
            finally:
                session.busy -= 1
                session.last_seen = time.monotonic()

        sub = await self.bus.serve(bus_name, request_type, serve)
        self.sessions[session.id] = (session, sub)
        return bus_name

    async def _end(self, sid: str) -> None:
        entry = self.sessions.pop(sid, None)
        if entry is None:
            return
        session, sub = entry
        # Not awaited here: draining waits for in-flight requests, one of
        # which may be the caller.
        asyncio.get_running_loop().create_task(self.bus.unserve(sub))
        await session.close()

    async def _reap_forever(self) -> None:
        swept = 0.0
        while True:
            now = time.monotonic()
            if now - swept > STALE_S:
                swept = now
                with contextlib.suppress(Exception):
                    if count := await transfer.sweep(self.transfers, STALE_S):
                        _log.info("stale transfer parts deleted", parts=count)
            for sid, (session, _) in list(self.sessions.items()):
                if not session.busy and now - session.last_seen > IDLE_S:
                    _log.warning("session abandoned by its gateway: ended", session=sid)
                    await self._end(sid)
            await asyncio.sleep(IDLE_S / 4)


def _done(summary: RestoreSummary) -> msg.RestoreDone:
    return msg.RestoreDone(
        events=summary.events,
        objects=summary.objects,
        object_bytes=summary.object_bytes,
        last_seq=summary.last_seq,
    )
