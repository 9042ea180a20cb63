"""The restore gate: what every service needs to honour a restore.

The admin service owns the cluster's state (``services/admin``); it keeps it
in the JetStream key-value bucket ``PACH_CLUSTER``, and this module is the
read-only contract the other services share:

- ``cluster_id``: a uuid4 hex, created once by admin and kept;
- ``restore``: the last restore into this cluster, as JSON ``{id, state,
  last_seq, reaction_floors, started, finished}``; ``state`` is ``running``
  while its events are appended and ``done`` afterwards.

``ReactionGate`` is how reactions, pps masters and cron tickers honour a
restore (docs/decisions/0011-extract-restore-gc.md, Restore): while one runs
they wait; afterwards a reaction acknowledges, without handling, every event
at or below its floor (it was handled before the extract) and handles the
rest. The gate keeps the ``restore`` key cached through a KV watch, so the
per-event check is an in-memory comparison. ``libs.events.Reactor`` takes it
as its ``Gate`` protocol (libs/events knows nothing of restores).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

import nats.errors
import nats.js.errors
import structlog
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from libs.errors import FailedPrecondition, InvalidArgument, PachError

_log = structlog.get_logger("restore_gate")

CLUSTER_BUCKET = "PACH_CLUSTER"
CLUSTER_ID_KEY = "cluster_id"
RESTORE_KEY = "restore"

_NO_KEY = (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError)

RUNNING = "running"
DONE = "done"


@dataclass(frozen=True)
class RestoreStatus:
    """The ``restore`` key: the last restore into this cluster."""

    restore_id: str
    state: str  # RUNNING | DONE
    last_seq: int
    reaction_floors: dict[str, int]
    started: float
    finished: float  # 0 while running

    @property
    def running(self) -> bool:
        return self.state == RUNNING

    def floor(self, reaction: str) -> int:
        """The stream sequence up to which ``reaction`` handled every event
        before the extract; a reaction the extract does not name handled all
        of it."""
        return self.reaction_floors.get(reaction, self.last_seq)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "id": self.restore_id,
                "state": self.state,
                "last_seq": self.last_seq,
                "reaction_floors": self.reaction_floors,
                "started": self.started,
                "finished": self.finished,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> RestoreStatus:
        try:
            doc: Any = json.loads(data)
            floors = doc.get("reaction_floors") or {}
            status = cls(
                restore_id=str(doc["id"]),
                state=str(doc["state"]),
                last_seq=int(doc["last_seq"]),
                reaction_floors={str(k): int(v) for k, v in floors.items()},
                started=float(doc.get("started", 0.0)),
                finished=float(doc.get("finished", 0.0)),
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise InvalidArgument(
                f"the {CLUSTER_BUCKET} key {RESTORE_KEY!r} is not a restore status: {exc!r}"
            ) from None
        if status.state not in (RUNNING, DONE):
            raise InvalidArgument(
                f"the {CLUSTER_BUCKET} key {RESTORE_KEY!r} has an unknown state {status.state!r}"
            )
        return status


class ClusterView:
    """The ``PACH_CLUSTER`` bucket (file storage, history 1), read only:
    what every service needs of it. The admin service alone writes it
    (``services/admin/adapters/cluster_state.py``)."""

    def __init__(self, js: JetStreamContext, kv: KeyValue) -> None:
        self.js = js
        self.kv = kv

    @classmethod
    async def open_bucket(cls, js: JetStreamContext, *, replicas: int = 1) -> KeyValue:
        """The bucket, created when missing (two racing creators agree)."""
        config = api.KeyValueConfig(
            bucket=CLUSTER_BUCKET,
            history=1,
            storage=api.StorageType.FILE,
            replicas=replicas,
        )
        try:
            return await js.create_key_value(config)
        except nats.js.errors.BadRequestError:
            return await js.key_value(CLUSTER_BUCKET)

    @classmethod
    async def open(cls, js: JetStreamContext, *, replicas: int = 1) -> Self:
        return cls(js, await cls.open_bucket(js, replicas=replicas))

    async def stored_cluster_id(self) -> str:
        """This cluster's id; "" while none was made yet (admin makes it)."""
        try:
            entry = await self.kv.get(CLUSTER_ID_KEY)
        except _NO_KEY:
            return ""
        return (entry.value or b"").decode()

    async def restore_status(self) -> RestoreStatus | None:
        """The last restore into this cluster; None when there never was one."""
        try:
            entry = await self.kv.get(RESTORE_KEY)
        except _NO_KEY:
            return None
        if not entry.value:
            return None
        return RestoreStatus.from_json(entry.value)


async def check_cluster_id(view: ClusterView, expected: str) -> None:
    """FailedPrecondition unless the cluster's id is ``expected`` (a service
    pinned to one cluster refuses to serve another's log)."""
    found = await view.stored_cluster_id()
    if found != expected:
        raise FailedPrecondition(
            f"this service belongs to cluster {expected!r}, but the event log is "
            f"cluster {found or 'without an id'!r}",
            expected=expected,
            found=found,
        )


@dataclass
class ReactionGate:
    """Holds reactions, masters and cron ticks while a restore runs, and
    tells a reaction which events the restored cluster already handled.

    One per process: ``start()`` loads the ``restore`` key and keeps it
    cached through a KV watch; ``stop()`` ends the watch.

    The watch delivers a moment after the key changed, and a restore writes
    the key *before* appending its first event, so until the gate has seen
    the event log non-empty with no restore recorded, an open answer is
    confirmed with a KV read (and the stream's last sequence). Once confirmed,
    no restore can begin any more (a restore needs an empty log) and every
    check is in memory.

    ``applied`` (e.g. ``ServiceContext.applied_seq``): after a restore, the
    gate also stays shut until this process's read models applied the
    restored log (``applied() >= last_seq``), so nothing acts on a read model
    that is still catching up.
    """

    state: ClusterView
    stream: str = "EVENTS"
    applied: Callable[[], int] | None = None
    poll: float = 0.05
    # Whether this process serves the event log (``libs.log_guard``): while
    # not (the log lost or another cluster's), the gate stays shut too.
    log_ok: Callable[[], bool] | None = None
    _caught_up: str = ""  # the restore id whose log our read models applied
    _status: RestoreStatus | None = None
    _settled: bool = False
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _confirm_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _task: asyncio.Task[None] | None = None
    skipped: int = 0  # reaction events acknowledged below their floor

    @property
    def status(self) -> RestoreStatus | None:
        """The cached restore status."""
        return self._status

    async def start(self) -> None:
        await self._set(await self.state.restore_status())
        if self._task is None:
            self._task = asyncio.create_task(self._watch_forever(), name="reaction gate watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def wait_open(self) -> None:
        """Return at once when no restore runs; wait while one does (and
        while the process does not serve the event log)."""
        if self.log_ok is not None and not self.log_ok():
            _log.info("waiting for the event log to be served again")
            while True:  # a plain flag kept by the guard: polled
                if self.log_ok():
                    break
                await asyncio.sleep(self.poll * 4)
        if self._status is None and not self._settled:
            await self._confirm()
        if self._status is not None and self._status.running:
            _log.info("waiting for the restore to finish", restore=self._status.restore_id)
            async with self._changed:
                await self._changed.wait_for(
                    lambda: self._status is None or not self._status.running
                )
        status = self._status
        if status is not None and self.applied is not None and self._caught_up != status.restore_id:
            # ``applied`` is a plain number kept by the projections: polled.
            while True:
                if self.applied() >= status.last_seq:
                    break
                await asyncio.sleep(self.poll)
            self._caught_up = status.restore_id

    async def admit(self, reaction: str, seq: int) -> bool:
        """Whether reaction ``reaction`` should handle the event at stream
        sequence ``seq`` (waits while a restore runs). False for an event the
        restored cluster had already handled: at or below the reaction's floor."""
        await self.wait_open()
        status = self._status
        if status is None:
            return True
        if seq <= status.floor(reaction):
            self.skipped += 1
            return False
        return True

    # --- keeping the cache -------------------------------------------------------

    async def _set(self, status: RestoreStatus | None) -> None:
        async with self._changed:
            self._status = status
            self._changed.notify_all()

    async def _confirm(self) -> None:
        """Read the key again; settle when the log holds events written
        while no restore was recorded."""
        async with self._confirm_lock:
            if self._status is not None or self._settled:
                return
            try:
                info = await self.state.js.stream_info(self.stream)
                last = int(info.state.last_seq or 0)
            except nats.js.errors.NotFoundError:
                last = 0
            status = await self.state.restore_status()
            if status is not None:
                await self._set(status)
            elif last >= 1:
                self._settled = True

    async def _watch_forever(self) -> None:
        delay = 0.5
        while True:
            try:
                await self._watch()
            except asyncio.CancelledError:
                raise
            except (PachError, nats.errors.Error, OSError) as exc:
                _log.warning("restore watch failed; watching again", error=str(exc) or repr(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _watch(self) -> None:
        watcher = await self.state.kv.watch(RESTORE_KEY)
        try:
            async for entry in watcher:
                if entry is None:
                    continue  # the end of what was stored when the watch began
                if entry.operation in ("DEL", "PURGE") or not entry.value:
                    await self._set(None)
                else:
                    await self._set(RestoreStatus.from_json(entry.value))
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]
