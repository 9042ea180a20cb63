"""The cluster's own state, written by admin alone: its id and the restore
in progress, in the JetStream key-value bucket ``PACH_CLUSTER``. The other
services read it through ``libs.restore_gate`` (the gate and the read-only
view); the layout of the bucket is defined there.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Mapping

import nats.js.errors

from libs.errors import FailedPrecondition, InvalidArgument
from libs.restore_gate import (
    CLUSTER_ID_KEY,
    DONE,
    RESTORE_KEY,
    RUNNING,
    ClusterView,
    RestoreStatus,
)

_NO_KEY = (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError)


class ClusterState(ClusterView):
    """The ``PACH_CLUSTER`` bucket with its writes: the cluster id, and the
    restore state the gates of every service read."""

    async def cluster_id(self) -> str:
        """This cluster's id, created by the first caller ever."""
        if stored := await self.stored_cluster_id():
            return stored
        fresh = uuid.uuid4().hex
        try:
            await self.kv.create(CLUSTER_ID_KEY, fresh.encode())
            return fresh
        except nats.js.errors.KeyWrongLastSequenceError:
            entry = await self.kv.get(CLUSTER_ID_KEY)  # another caller won the race
            return (entry.value or b"").decode()

    async def adopt_cluster_id(self, cluster_id: str) -> str:
        """Record ``cluster_id`` (the id the event stream carries) unless an
        id is stored already; the stored id either way."""
        try:
            await self.kv.create(CLUSTER_ID_KEY, cluster_id.encode())
            return cluster_id
        except nats.js.errors.KeyWrongLastSequenceError:
            return await self.stored_cluster_id()

    async def begin_restore(
        self, restore_id: str, last_seq: int, reaction_floors: Mapping[str, int]
    ) -> None:
        """Record a restore as running: from now on the gates hold every
        reaction, master and cron ticker until ``finish_restore``."""
        if not restore_id:
            raise InvalidArgument("a restore needs an id")
        if last_seq < 0:
            raise InvalidArgument(f"a restore's last_seq must be >= 0, not {last_seq}")
        bad = {k: v for k, v in reaction_floors.items() if not 0 <= v <= last_seq}
        if bad:
            raise InvalidArgument(
                f"reaction floors must lie in 0..{last_seq} (the restore's last_seq): {bad}"
            )
        status = RestoreStatus(
            restore_id=restore_id,
            state=RUNNING,
            last_seq=last_seq,
            reaction_floors=dict(reaction_floors),
            started=time.time(),
            finished=0.0,
        )
        await self.kv.put(RESTORE_KEY, status.to_json())

    async def finish_restore(self, restore_id: str) -> None:
        """Mark restore ``restore_id`` done: the gates open."""
        current, revision = await self._restore_entry()
        if current is None or current.restore_id != restore_id:
            found = "no restore" if current is None else f"restore {current.restore_id!r}"
            raise FailedPrecondition(
                f"cannot finish restore {restore_id!r}: the cluster records {found}",
                restore_id=restore_id,
            )
        if not current.running:
            return
        done = RestoreStatus(
            restore_id=current.restore_id,
            state=DONE,
            last_seq=current.last_seq,
            reaction_floors=current.reaction_floors,
            started=current.started,
            finished=time.time(),
        )
        try:
            await self.kv.update(RESTORE_KEY, done.to_json(), last=revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            raise FailedPrecondition(
                f"cannot finish restore {restore_id!r}: its record changed meanwhile",
                restore_id=restore_id,
            ) from None

    async def abandon_restore(self, restore_id: str) -> None:
        """Forget restore ``restore_id`` while it still runs (it was refused
        before any event landed): the gates open as if it never began. A
        restore that finished, or another one, is left alone."""
        current, revision = await self._restore_entry()
        if current is None or current.restore_id != restore_id or not current.running:
            return
        with contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError):
            await self.kv.delete(RESTORE_KEY, last=revision)

    async def _restore_entry(self) -> tuple[RestoreStatus | None, int]:
        try:
            entry = await self.kv.get(RESTORE_KEY)
        except _NO_KEY:
            return None, 0
        if not entry.value:
            return None, int(entry.revision or 0)
        return RestoreStatus.from_json(entry.value), int(entry.revision or 0)
