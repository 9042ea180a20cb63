"""Turn one file's byte stream into ``DataRef``s stored in the object store.

Large files are cut into content-addressed chunks (``chunks/<h[:2]>/<h>``,
identical chunks stored once) and are durable when ``write_file`` returns.
Small files are packed: appended to a shared pack that is written as one
object when full or on ``flush()``.

CONTRACT: refs of a small (packed) file are NOT durable when ``write_file``
returns; they are valid only once a later ``flush()`` has returned. Never hand
them to pfs before that. If writing a pack fails, ``flush()`` (and every later
call) raises, and every ref returned since the last successful flush is void.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from collections.abc import AsyncIterable, Sequence

from libs.errors import InvalidArgument
from libs.objects import _io
from libs.objects.base import ObjectStore
from libs.objects.chunking import CHUNK_SIZE, chunk_key, hash_bytes
from libs.trees.model import DataRef

SMALL_FILE = 1 << 20  # files shorter than this are packed
_WRITE_AHEAD = 1  # chunk writes in flight while the next chunk fills (2 measured no faster)
_PACKS_AHEAD = 1  # sealed packs being written while the next one fills


class FileWriter:
    """Stores files' bytes; one writer is shared by many ``write_file`` calls."""

    def __init__(
        self, store: ObjectStore, chunk_size: int = CHUNK_SIZE, small_file: int = SMALL_FILE
    ) -> None:
        if chunk_size <= 0 or small_file < 0 or small_file > chunk_size:
            raise InvalidArgument(
                f"need chunk_size > 0 and 0 <= small_file <= chunk_size, "
                f"got {chunk_size} and {small_file}"
            )
        self._store = store
        self._chunk_size = chunk_size
        self._small = small_file
        self._pack = bytearray()
        self._pack_id = _new_pack_id()
        self._packing: deque[asyncio.Task[None]] = deque()
        self._chunk_writes: dict[str, asyncio.Future[None]] = {}
        self._failed: BaseException | None = None

    async def write_file(self, blocks: AsyncIterable[bytes]) -> list[DataRef]:
        """Store one file's content; returns its refs (``[]`` when empty).

        Large-file refs are durable on return; packed ones only after ``flush()``."""
        self._raise_if_failed()
        head: list[bytes] = []
        size = 0
        it = aiter(blocks)
        async for block in it:
            _check(block)
            if not block:
                continue
            head.append(bytes(block) if not isinstance(block, bytes) else block)
            size += len(block)
            if size >= self._small:
                return await self._write_large(head, it)
        if not size:
            return []
        return [await self._append_to_pack(head, size)]

    async def flush(self) -> None:
        """Make every ref returned so far durable (writes the open pack).

        Safe to run while other calls go on writing files (the gateway
        flushes one batch in the background while it packs the next): it
        waits for the packs sealed when it was called, whoever else is
        waiting for them too."""
        self._raise_if_failed()
        if self._pack:
            self._seal()
        sealed = list(self._packing)
        for task in sealed:
            try:
                await task
            except BaseException as exc:
                self._failed = self._failed or exc
                raise
        while self._packing and self._packing[0] in sealed:  # done, and seen done
            self._packing.popleft()

    async def write_small(self, data: bytes) -> list[DataRef]:
        """``write_file`` of one block shorter than the small-file size
        (the caller checked): packed, durable after ``flush()``."""
        self._raise_if_failed()
        if not data:
            return []
        return [await self._append_to_pack((data,), len(data))]

    @property
    def small_file(self) -> int:
        return self._small

    # --- packs --------------------------------------------------------------

    async def _append_to_pack(self, parts: Sequence[bytes], size: int) -> DataRef:
        if len(self._pack) + size > self._chunk_size:
            self._seal()
        ref = DataRef(self._pack_id, len(self._pack), size)
        for part in parts:
            self._pack += part
        if len(self._pack) >= self._chunk_size:
            self._seal()
        while len(self._packing) > _PACKS_AHEAD:
            await self._finish_oldest_pack()
        return ref

    def _seal(self) -> None:
        data, key = self._pack, chunk_key(self._pack_id)
        self._pack, self._pack_id = bytearray(), _new_pack_id()
        self._packing.append(asyncio.create_task(self._store.put(key, bytes(data))))

    async def _finish_oldest_pack(self) -> None:
        task = self._packing.popleft()
        try:
            await task
        except BaseException as exc:
            self._failed = self._failed or exc
            raise

    def _raise_if_failed(self) -> None:
        if self._failed is not None:
            raise self._failed

    # --- large files ----------------------------------------------------------

    async def _write_large(self, head: list[bytes], rest: AsyncIterable[bytes]) -> list[DataRef]:
        inflight: deque[asyncio.Task[DataRef]] = deque()
        refs: list[DataRef] = []
        parts: list[memoryview] = []
        have = 0

        async def cut() -> None:
            nonlocal parts, have
            while len(inflight) >= _WRITE_AHEAD:  # at most this many chunks held, plus parts
                refs.append(await inflight.popleft())
            inflight.append(asyncio.create_task(self._store_chunk(parts)))
            parts, have = [], 0

        async def take(block: bytes) -> None:
            nonlocal have
            view = memoryview(block)
            while view:
                n = min(len(view), self._chunk_size - have)
                parts.append(view[:n])
                have += n
                view = view[n:]
                if have == self._chunk_size:
                    await cut()

        try:
            for block in head:
                await take(block)
            head.clear()
            async for block in rest:
                _check(block)
                await take(block if isinstance(block, bytes) else bytes(block))
            if parts:
                await cut()
            while inflight:
                refs.append(await inflight.popleft())
        except BaseException:
            for task in inflight:
                task.cancel()
            await asyncio.gather(*inflight, return_exceptions=True)
            raise
        return refs

    async def _store_chunk(self, parts: list[memoryview]) -> DataRef:
        data, digest = await _io.run(_join_and_hash, parts)
        parts.clear()
        ref = DataRef(digest, 0, len(data))
        other = self._chunk_writes.get(digest)
        if other is not None:  # the same content is being written right now
            await asyncio.shield(other)
            return ref
        done = asyncio.get_running_loop().create_future()
        done.add_done_callback(_retrieve)
        self._chunk_writes[digest] = done
        try:
            key = chunk_key(digest)
            # Touched when stored already: GC spares a reused old chunk.
            if not await self._store.touch(key):
                await self._store.put(key, data)
            done.set_result(None)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                done.cancel()
            else:
                done.set_exception(exc)
            raise
        finally:
            del self._chunk_writes[digest]
        return ref


def _new_pack_id() -> str:
    """Packs are named by a random 256-bit id, not their hash: refs to a pack are
    handed out before its content is complete (docs/decisions/0008-file-data.md)."""
    return secrets.token_hex(32)


def _join_and_hash(parts: list[memoryview]) -> tuple[bytes, str]:
    if len(parts) == 1 and isinstance(parts[0].obj, bytes) and len(parts[0]) == len(parts[0].obj):
        data = parts[0].obj
    else:
        data = b"".join(parts)
    return data, hash_bytes(data)


def _check(block: object) -> None:
    if not isinstance(block, bytes | bytearray | memoryview):
        raise InvalidArgument(
            f"file data blocks must be bytes, got {type(block).__name__}",
            type=type(block).__name__,
        )


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark a chunk write's outcome as seen, whether or not anyone waited for it."""
    if not future.cancelled():
        future.exception()
