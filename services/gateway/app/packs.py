"""Group commit of small files: the one small file of each of many put-file
streams goes into one shared pack, written (and synced) once for all of them.

A put-file stream keeps its small files in a pack of its own
(``libs.filedata.FileWriter``) and writes it, with a file fsync and a
directory fsync, before it asks pfs for the commit. Many clients each
putting one small file at once (``pachctl put-file repo master -f file`` in
a loop, python-pachyderm's ``put_file_bytes``) were as many pack writes,
each two fsyncs and two hops to the I/O threads. Here a stream whose only
file is small hands its bytes to ``PackGroups.write``: they are appended to
the pack being filled, which is written at once unless the owner's packs
in flight are at their limit; the caller gets its ref once that pack is
durable (so, as before, pfs only ever sees durable refs). Up to four packs
of an owner are written at once; while they are, the files that arrive
fill the next.

Packs are grouped per caller (``owner``, the caller's token): a pack never
mixes the bytes of two principals. A failed write fails only the callers
whose bytes were in that pack; the next pack is a new object."""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from dataclasses import dataclass, field

from libs.objects import ObjectStore
from libs.objects.chunking import CHUNK_SIZE, chunk_key
from libs.trees.model import DataRef


@dataclass
class _Pack:
    id: str = field(default_factory=lambda: secrets.token_hex(32))
    data: bytearray = field(default_factory=bytearray)
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class _Group:
    """One owner's packs: the one being filled, those sealed and waiting,
    and how many are being written."""

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._filling = _Pack()
        self._sealed: deque[_Pack] = deque()
        self.writing = 0

    def add(self, data: bytes) -> tuple[DataRef, asyncio.Future[None]]:
        pack = self._filling
        if pack.data and len(pack.data) + len(data) > self._max:
            self._seal()
            pack = self._filling
        ref = DataRef(pack.id, len(pack.data), len(data))
        pack.data += data
        return ref, pack.done

    def _seal(self) -> None:
        self._sealed.append(self._filling)
        self._filling = _Pack()

    def next(self) -> _Pack | None:
        """The next pack to write (sealing the one being filled), if any."""
        if not self._sealed:
            if not self._filling.data:
                return None
            self._seal()
        return self._sealed.popleft()

    def abandon(self) -> None:
        """Tell the callers of the packs not written yet that they never will be."""
        for pack in (*self._sealed, self._filling):
            pack.done.cancel()
        self._sealed.clear()
        self._filling = _Pack()

    def idle(self) -> bool:
        return not self.writing and not self._sealed and not self._filling.data


class PackGroups:
    """Shared packs for one-small-file put-files, per owner. Up to
    ``writes`` packs of an owner are written at once: a file that finds
    fewer in flight has its pack written at once (alone, when the streams
    are few), and the files that come while all are in flight share the
    next pack."""

    def __init__(self, store: ObjectStore, max_bytes: int = CHUNK_SIZE, writes: int = 4) -> None:
        self._store = store
        self._max = max_bytes
        self._writes = writes
        self._groups: dict[str, _Group] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def write(self, owner: str, data: bytes) -> DataRef:
        """Store ``data`` in ``owner``'s next pack; its ref once the pack is
        durable (the write's error when it is not)."""
        group = self._groups.get(owner)
        if group is None:
            group = self._groups[owner] = _Group(self._max)
        ref, done = group.add(data)
        self._start(owner, group)
        await asyncio.shield(done)  # a cancelled caller leaves the write to the others
        return ref

    def _start(self, owner: str, group: _Group) -> None:
        while group.writing < self._writes and (pack := group.next()) is not None:
            group.writing += 1
            task = asyncio.create_task(self._write(owner, group, pack))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _write(self, owner: str, group: _Group, pack: _Pack) -> None:
        try:
            await self._store.put(chunk_key(pack.id), bytes(pack.data))
        except Exception as exc:
            if not pack.done.done():
                pack.done.set_exception(exc)
                pack.done.exception()  # retrieved: its callers may be gone
        except BaseException:  # cancelled (stopping): no more writes start
            pack.done.cancel()
            group.abandon()
            raise
        else:
            if not pack.done.done():
                pack.done.set_result(None)
        finally:
            group.writing -= 1
        self._start(owner, group)
        if group.idle() and self._groups.get(owner) is group:
            del self._groups[owner]

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
