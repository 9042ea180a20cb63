"""Object bytes from the local store straight to a socket (``os.sendfile``).

The gateway's HTTP download of a file whose chunks are files of the local
store sends each chunk range with ``sendfile``: the bytes go from the page
cache (or the disk) to the socket inside the kernel, never through Python
(docs/decisions/0036-get-file-fast-path.md).

``SocketSink`` writes to a duplicate of an asyncio transport's socket (the
transport's own buffer must be empty, and nothing else writes to it until
the sink is closed). Each range is sent on the objects I/O pool (reading a
cold chunk blocks on the disk), a hop at a time: a hop opens the file and
sends until the range is done (closing it) or the socket stays full for
``STALL_S``; then the event loop waits until the socket is writable again,
holding no thread while a slow reader catches up. Memory stays the same whatever the file size.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import select
import stat as stat_mod
import threading
from pathlib import Path
from typing import Any

from libs.errors import Internal, ObjectNotFound
from libs.objects import _io

Range = tuple[Path, int, int]  # an object file, offset, length

# How long a hop waits in its thread for a full socket to drain before it
# hands the wait back to the event loop.
STALL_S = 0.02


class SocketSink:
    def __init__(self, transport: asyncio.Transport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is None:
            raise Internal("the HTTP transport has no socket to send a file to")
        # A duplicate: should the transport close meanwhile, its descriptor
        # number cannot be reused under a hop still sending.
        self._fd = os.dup(sock.fileno())
        self._loop = asyncio.get_running_loop()
        self._stop = threading.Event()
        self._pending: concurrent.futures.Future[Any] | None = None
        self.sent = 0

    async def send(
        self, path: Path, key: str, offset: int, length: int, ahead: Range | None = None
    ) -> None:
        """Send bytes ``[offset, offset+length)`` of the object file ``path``
        (key ``key``); Internal if it holds fewer. One hop opens, sends and
        closes, unless the reader is slow: then the file stays open across
        the waits. ``ahead`` (the range sent next) is read in meanwhile."""
        src: int | None = None
        hop: concurrent.futures.Future[tuple[int | None, int]] | None = None
        if ahead is not None:
            _io.submit(_read_ahead, *ahead)
        try:
            while length > 0:
                hop = _io.submit(_send, self._fd, src, path, key, offset, length, self._stop)
                self._pending = hop
                src, n = await asyncio.wrap_future(hop)
                hop = None
                offset += n
                length -= n
                self.sent += n
                if src is not None:  # stalled: the reader is behind
                    await self._writable()
        finally:
            if hop is not None:  # cancelled during a hop: close what it leaves open
                given = src
                hop.add_done_callback(lambda done: _close_left_open(done, given))
            elif src is not None:
                _close_quietly(src)

    async def _writable(self) -> None:
        ready = self._loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        self._loop.add_writer(self._fd, wake)
        try:
            await ready
        finally:
            self._loop.remove_writer(self._fd)

    def close(self) -> None:
        """Stop (a hop in flight ends at its next step) and release the socket."""
        self._stop.set()
        fd = self._fd
        _io.after(self._pending, lambda: _close_quietly(fd))


def _send(
    out: int,
    src: int | None,
    path: Path,
    key: str,
    offset: int,
    length: int,
    stop: threading.Event,
) -> tuple[int | None, int]:
    """Send from ``src`` (opened here when None): ``(None, sent)`` when the
    range is done (the file closed), ``(src, sent)`` when the socket stayed
    full for ``STALL_S`` (the caller waits, then calls again)."""
    if src is None:
        src = _open(path, key, offset + length)
    try:
        sent = 0
        poller: select.poll | None = None
        while sent < length:
            if stop.is_set():
                raise ConnectionResetError("the download was stopped")
            try:
                n = os.sendfile(out, src, offset + sent, length - sent)
            except BlockingIOError:
                if poller is None:
                    poller = select.poll()
                    poller.register(out, select.POLLOUT)
                if not poller.poll(STALL_S * 1000):
                    return src, sent
                continue
            if n == 0:  # the file ended early (checked at open: truncated since)
                raise Internal(f"object {key} ended {length - sent} bytes early", key=key)
            sent += n
    except BaseException:
        _close_quietly(src)
        raise
    _close_quietly(src)
    return None, sent


def _read_ahead(path: Path, offset: int, length: int) -> None:
    """Start reading a range into the page cache (cold chunks: the disk
    works on the next one while this one is sent)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return  # the send itself will say what is wrong
    try:
        with contextlib.suppress(OSError):  # advice only: the send reads it anyway
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_WILLNEED)
    finally:
        os.close(fd)


def _open(path: Path, key: str, end: int) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise ObjectNotFound(key) from None
    st = os.fstat(fd)
    if not stat_mod.S_ISREG(st.st_mode) or st.st_size < end:
        os.close(fd)
        raise Internal(
            f"object {key} holds {st.st_size} bytes, fewer than a read to {end} needs", key=key
        )
    return fd


def _close_left_open(
    hop: concurrent.futures.Future[tuple[int | None, int]], given: int | None
) -> None:
    """After a hop nobody awaits: close the file it was given (it never ran)
    or left open (it stalled); one that failed closed it itself."""
    if hop.cancelled():
        left = given
    elif hop.exception() is None:
        left = hop.result()[0]
    else:
        return
    if left is not None:
        _close_quietly(left)


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
