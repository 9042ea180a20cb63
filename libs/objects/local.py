"""``LocalObjectStore``: objects as files under one directory.

A key ``a/b/c`` is the file ``<root>/a/b/c``. Writes are atomic and durable:
data goes to a temporary file in the destination directory (``.put-…``),
is fsynced, renamed over the destination, and the directory is fsynced, so a
reader or a crash sees the whole object or nothing. All file work runs on
``libs.objects._io``'s thread pool; writes and reads are pipelined one block
ahead so the event loop and the disk both stay busy.

Durable writes keep the page cache small: a stream is flushed to disk every
``SYNC_EVERY`` bytes while later blocks are still being written (so the final
fsync has little left), and the flushed, now clean pages of big objects are
dropped (``POSIX_FADV_DONTNEED``). Growing the page cache by the size of every
object written costs more than the disk itself on this kind of VM (memory
handed back to the host must be faulted in again, ~250 MB/s), see
docs/decisions/0002-object-store.md.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import secrets
import stat as stat_mod
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from libs.errors import InvalidArgument, ObjectNotFound, disk_full
from libs.objects import _io
from libs.objects.base import ObjectInfo, ObjectStore
from libs.objects.keys import TEMP_PREFIX, check_block_size, check_key, check_prefix, check_range

T = TypeVar("T")

# Blocks are gathered (small ones copied together, big ones by reference, one
# writev) until this many bytes, so each thread hop carries enough to be worth it.
WRITE_COALESCE = 8 << 20
# Blocks smaller than this are copied into a shared buffer rather than each
# taking an iovec of their own.
_SMALL_BLOCK = 256 << 10
_MAX_IOV = 512
# A durable stream starts flushing to disk after this many unsynced bytes,
# overlapped with the writes that follow.
SYNC_EVERY = 32 << 20
# Durable objects at least this big leave the page cache once on disk.
DROP_CACHE_MIN = 1 << 20

_DirEntry = tuple[str, bool, int, float]  # (name, is_dir, size, mtime)


class LocalObjectStore(ObjectStore):
    def __init__(self, root: Path | str, *, durable: bool = True) -> None:
        """``durable=False`` skips the fsyncs (tests and scratch stores only)."""
        self._root = Path(root).absolute()
        self._durable = durable

    @property
    def root(self) -> Path:
        return self._root

    def _path(self, key: str) -> Path:
        return self._root.joinpath(*check_key(key).split("/"))

    def path_of(self, key: str) -> Path:
        """The file that holds object ``key`` (for ``libs.objects.sendfile``,
        which sends its bytes to a socket without reading them)."""
        return self._path(key)

    # --- writes -------------------------------------------------------------

    async def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        _check_block(key, data)
        await self._on_disk(self._put_sync, key, path, data)

    async def _on_disk(self, fn: Callable[[str, Path, bytes], T], *args: Any) -> T:
        """``fn(*args)`` on the I/O pool; a full disk is ``disk_full``'s error."""
        try:
            return await _io.run(fn, *args)
        except OSError as exc:
            full = disk_full(exc, str(self._root))
            if full is None:
                raise
            raise full from None

    def _write_temp(self, key: str, path: Path, data: bytes) -> tuple[int, Path]:
        """``data`` in a new temporary file beside ``path``: (descriptor, name)."""
        fd, tmp = self._open_temp(key, path)
        try:
            _write_all(fd, data)
        except BaseException:
            _discard(fd, tmp)
            raise
        return fd, tmp

    def _put_sync(self, key: str, path: Path, data: bytes) -> None:
        fd, tmp = self._write_temp(key, path, data)
        self._commit(key, fd, tmp, path, 0, len(data))

    @property
    def durable(self) -> bool:
        return self._durable

    async def stage(self, key: str, data: bytes) -> Path:
        """Write ``data`` to a temporary file beside ``key``'s, with no fsync:
        the object does not exist yet (a crash leaves only a temp file, never
        a half-written object under its name). ``publish`` makes it one."""
        path = self._path(key)
        _check_block(key, data)
        return await self._on_disk(self._stage_sync, key, path, data)

    def _stage_sync(self, key: str, path: Path, data: bytes) -> Path:
        fd, tmp = self._write_temp(key, path, data)
        os.close(fd)
        return tmp

    async def publish(self, staged: Mapping[str, Path]) -> None:
        """Make staged objects (key -> temp file from ``stage``) durable
        together: every temp file is fsynced (concurrently, so one journal
        commit serves many), then renamed to its key, then each directory
        they went into is fsynced once. When this returns every one of them
        is on disk under its name; on an error, the temp files not yet
        renamed are removed and the error raised."""
        if not staged:
            return
        items = [(key, tmp, self._path(key)) for key, tmp in staged.items()]
        try:
            if self._durable:
                await _all([_io.submit(_fsync_file, tmp) for _, tmp, _ in items])
            await _io.run(_rename_all, items)
            if self._durable:
                dirs = {path.parent for _, _, path in items}
                await _all([_io.submit(_fsync_dir, d) for d in dirs])
        except BaseException:
            await asyncio.shield(_io.run(_discard_all, [tmp for _, tmp, _ in items]))
            raise

    @staticmethod
    async def discard(staged: Iterable[Path]) -> None:
        """Remove staged temp files that will not be published."""
        await _io.run(_discard_all, list(staged))

    async def put_stream(self, key: str, blocks: AsyncIterable[bytes]) -> int:
        try:
            return await self._put_stream(key, blocks)
        except OSError as exc:
            full = disk_full(exc, str(self._root))
            if full is None:
                raise
            raise full from None

    async def _put_stream(self, key: str, blocks: AsyncIterable[bytes]) -> int:
        path = self._path(key)
        opening = _io.submit(self._open_temp, key, path)
        try:
            fd, tmp = await asyncio.wrap_future(opening)
        except asyncio.CancelledError:
            _io.after(opening, lambda: _discard_opened(opening))
            raise
        pending: concurrent.futures.Future[int] | None = None  # the write in flight
        syncing: concurrent.futures.Future[None] | None = None  # the early flush in flight
        total = 0
        written = 0  # bytes whose write has finished
        synced = 0  # bytes before this are on disk and out of the page cache
        parts: list[bytes | bytearray] = []
        gathered = 0
        small: bytearray | None = None  # the small blocks being copied together
        try:

            async def write() -> None:
                nonlocal pending, syncing, written, synced, parts, gathered, small
                if pending is not None:
                    written += await asyncio.wrap_future(pending)
                    pending = None
                if self._durable and written - synced >= SYNC_EVERY:
                    if syncing is not None and syncing.done():
                        syncing.result()  # raise its error, if any
                        syncing = None
                    if syncing is None:  # otherwise the disk is busy: flush more next time
                        syncing = _io.submit(_flush_range, fd, synced, written)
                        synced = written
                pending = _io.submit(_writev_all, fd, parts)
                parts, gathered, small = [], 0, None

            async for block in blocks:
                _check_block(key, block)
                size = len(block)
                if not size:
                    continue
                total += size
                if size < _SMALL_BLOCK:
                    if small is None:
                        small = bytearray()
                        parts.append(small)
                    small += block
                else:
                    # Keep immutable blocks by reference; copy what the producer may reuse.
                    parts.append(block if isinstance(block, bytes) else bytes(block))
                    small = None
                gathered += size
                if gathered >= WRITE_COALESCE or len(parts) >= _MAX_IOV:
                    await write()
            if parts:
                await write()
            if pending is not None:
                written += await asyncio.wrap_future(pending)
                pending = None
            if syncing is not None:
                await asyncio.wrap_future(syncing)
                syncing = None
        except BaseException as exc:
            cleanup = _io.after([pending, syncing], lambda: _discard(fd, tmp))
            if not isinstance(exc, asyncio.CancelledError):
                await asyncio.wrap_future(cleanup)  # gone before the caller sees the error
            raise
        await _io.run(self._commit, key, fd, tmp, path, synced, total)
        return total

    def _open_temp(self, key: str, path: Path) -> tuple[int, Path]:
        directory = path.parent
        self._ensure_dir(key, directory)
        tmp = directory / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        return fd, tmp

    def _commit(self, key: str, fd: int, tmp: Path, path: Path, synced: int, size: int) -> None:
        """Make the temp file durable and rename it to ``path``.

        Bytes before ``synced`` were already flushed; ``size`` is the file's."""
        try:
            if self._durable:
                os.fsync(fd)
                if size >= DROP_CACHE_MIN:
                    os.posix_fadvise(fd, synced, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
        except BaseException:
            _discard(None, tmp)
            raise
        try:
            os.rename(tmp, path)
        except (IsADirectoryError, NotADirectoryError, FileExistsError):
            _discard(None, tmp)
            raise InvalidArgument(
                f"object key {key!r} conflicts with an existing prefix of the same name",
                key=key,
            ) from None
        except BaseException:
            _discard(None, tmp)
            raise
        if self._durable:
            _fsync_dir(path.parent)

    def _ensure_dir(self, key: str, directory: Path) -> None:
        if directory.is_dir():
            return
        if directory == self._root:
            # The store's own root may not exist yet on a fresh data directory.
            directory.mkdir(parents=True, exist_ok=True)
            return
        self._ensure_dir(key, directory.parent)
        try:
            directory.mkdir()
        except FileExistsError:
            if not directory.is_dir():
                raise InvalidArgument(
                    f"object key {key!r} runs through an existing object "
                    f"{directory.relative_to(self._root).as_posix()!r}",
                    key=key,
                ) from None
            return
        if self._durable:
            _fsync_dir(directory.parent)

    async def delete(self, key: str) -> None:
        path = self._path(key)
        await _io.run(_unlink_quietly, path)

    async def touch(self, key: str) -> bool:
        path = self._path(key)
        return await _io.run(_touch, path)

    async def delete_if_older(self, key: str, cutoff: float) -> bool:
        """Atomic against ``touch``: the object is first renamed away (a
        ``touch`` after that finds it absent and its caller writes it again),
        then its modification time is checked; a recent one is renamed back."""
        path = self._path(key)
        return await _io.run(_delete_if_older, path, cutoff)

    # --- reads --------------------------------------------------------------

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        check_range(offset, length)
        path = self._path(key)
        return await _io.run(_read_range, key, path, offset, length)

    async def get_stream(
        self, key: str, offset: int = 0, length: int | None = None, block_size: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        check_range(offset, length)
        check_block_size(block_size)
        path = self._path(key)
        fd, size = await _io.run(_open_read, key, path)
        end = size if length is None else min(size, offset + length)
        pos = offset
        nxt: concurrent.futures.Future[bytes] | None = None
        try:
            if pos < end:
                nxt = _io.submit(os.pread, fd, min(block_size, end - pos), pos)
            while nxt is not None:
                data = await asyncio.wrap_future(nxt)
                pos += len(data)
                nxt = None
                if data and pos < end:
                    nxt = _io.submit(os.pread, fd, min(block_size, end - pos), pos)
                if data:
                    yield data
        finally:
            _io.after(nxt, lambda: os.close(fd))

    async def exists(self, key: str) -> bool:
        path = self._path(key)
        return await _io.run(_is_file, path)

    async def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        size, modified = await _io.run(_file_stat, key, path)
        return ObjectInfo(key=key, size=size, modified=modified)

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        check_prefix(prefix)
        dir_part, _, name_prefix = prefix.rpartition("/")
        segments = dir_part.split("/") if dir_part else []
        if any(s in ("", ".", "..") or s.startswith(TEMP_PREFIX) for s in segments):
            return  # no valid key lives under such a prefix
        start = self._root.joinpath(*segments)
        base = dir_part + "/" if dir_part else ""
        first = await _io.run(_read_dir, start)
        stack: list[tuple[str, Path, Iterator[_DirEntry]]] = [
            (base, start, (e for e in first if e[0].startswith(name_prefix)))
        ]
        while stack:
            key_base, directory, entries = stack[-1]
            entry = next(entries, None)
            if entry is None:
                stack.pop()
                continue
            name, is_dir, size, modified = entry
            if is_dir:
                sub = directory / name
                stack.append((f"{key_base}{name}/", sub, iter(await _io.run(_read_dir, sub))))
            else:
                yield ObjectInfo(key=key_base + name, size=size, modified=modified)


# --- blocking helpers (run on the I/O pool) ---------------------------------


def _check_block(key: str, block: object) -> None:
    if not isinstance(block, bytes | bytearray | memoryview):
        raise InvalidArgument(
            f"object {key!r}: data blocks must be bytes, got {type(block).__name__}", key=key
        )


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _writev_all(fd: int, parts: list[bytes | bytearray]) -> int:
    """Write ``parts`` in order with as few ``writev`` calls as the kernel allows."""
    total = sum(len(p) for p in parts)
    views = [memoryview(p) for p in parts]
    while views:
        written = os.writev(fd, views)
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if written:
            views[0] = views[0][written:]
    return total


def _flush_range(fd: int, start: int, end: int) -> None:
    """Put bytes ``[start, end)`` (already written) on disk and out of the page cache.

    An early flush of a stream still being written: the final fsync then has
    little left, and the page cache does not grow by the whole object."""
    os.fdatasync(fd)
    os.posix_fadvise(fd, start, end - start, os.POSIX_FADV_DONTNEED)


def _discard(fd: int | None, tmp: Path) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


def _discard_opened(opening: concurrent.futures.Future[tuple[int, Path]]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        _discard(*opening.result())


async def _all(futures: list[concurrent.futures.Future[None]]) -> None:
    """Wait for every pool job (even when one fails: a temp file must not
    be removed while a job still uses it), then raise the first error."""
    results = await asyncio.gather(
        *(asyncio.wrap_future(f) for f in futures), return_exceptions=True
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rename_all(items: list[tuple[str, Path, Path]]) -> None:
    for key, tmp, path in items:
        try:
            os.rename(tmp, path)
        except (IsADirectoryError, NotADirectoryError, FileExistsError):
            raise InvalidArgument(
                f"object key {key!r} conflicts with an existing prefix of the same name",
                key=key,
            ) from None


def _discard_all(paths: list[Path]) -> None:
    for tmp in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _fsync_dir(directory: Path) -> None:
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _unlink_quietly(path: Path) -> None:
    # An absent key (or a prefix directory, which is not an object) is a no-op.
    with contextlib.suppress(FileNotFoundError, IsADirectoryError, NotADirectoryError):
        os.unlink(path)


def _open_read(key: str, path: Path) -> tuple[int, int]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise ObjectNotFound(key) from None
    st = os.fstat(fd)
    if not stat_mod.S_ISREG(st.st_mode):
        os.close(fd)
        raise ObjectNotFound(key)
    return fd, st.st_size


def _read_range(key: str, path: Path, offset: int, length: int | None) -> bytes:
    fd, size = _open_read(key, path)
    try:
        end = size if length is None else min(size, offset + length)
        if end <= offset:
            return b""
        parts: list[bytes] = []
        pos = offset
        while pos < end:
            data = os.pread(fd, end - pos, pos)
            if not data:
                break
            parts.append(data)
            pos += len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)
    finally:
        os.close(fd)


def _is_file(path: Path) -> bool:
    return path.is_file()


def _file_stat(key: str, path: Path) -> tuple[int, float]:
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise ObjectNotFound(key) from None
    if not stat_mod.S_ISREG(st.st_mode):
        raise ObjectNotFound(key)
    return st.st_size, st.st_mtime


def _touch(path: Path) -> bool:
    try:
        if not stat_mod.S_ISREG(os.stat(path).st_mode):
            return False
        os.utime(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return True


def _delete_if_older(path: Path, cutoff: float) -> bool:
    try:
        if not stat_mod.S_ISREG(os.lstat(path).st_mode):
            return False
    except (FileNotFoundError, NotADirectoryError):
        return False
    condemned = path.parent / f"{TEMP_PREFIX}gc-{secrets.token_hex(8)}"
    try:
        os.rename(path, condemned)
    except (FileNotFoundError, NotADirectoryError):
        return False
    if os.stat(condemned).st_mtime >= cutoff:
        # Touched just before the rename: put it back. Should a writer have
        # stored it again meanwhile, its bytes are the same (content addressed).
        os.rename(condemned, path)
        return False
    os.unlink(condemned)
    return True


def _read_dir(directory: Path) -> list[_DirEntry]:
    """One directory's entries in key order (a directory sorts as ``name/``)."""
    out: list[tuple[str, str, bool, int, float]] = []
    try:
        with os.scandir(directory) as it:
            for entry in it:
                if entry.name.startswith(TEMP_PREFIX):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    out.append((entry.name + "/", entry.name, True, 0, 0.0))
                elif entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    out.append((entry.name, entry.name, False, st.st_size, st.st_mtime))
    except (FileNotFoundError, NotADirectoryError):
        return []
    out.sort()
    return [(name, is_dir, size, mtime) for _, name, is_dir, size, mtime in out]
