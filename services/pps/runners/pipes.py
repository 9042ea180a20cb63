"""Pipes to and from a sandbox: its stdin written, its stdout and stderr
cut into lines for the run's ``LineSink``. Both runners (a sandbox per run
and a warm sandbox per slot) use these.

Pipes to and from a sandbox are read and written by threads of their own
(blocking I/O), not by event loop transports: a pipe transport per run
under uvloop lost the end of some pipes after many runs (their readers
then waited out the drain time and their descriptors leaked).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import threading
from collections.abc import Callable
from typing import IO

from services.pps.runners.base import LineSink

MAX_LINE = 64 << 10  # longer output lines are cut into pieces of this size
_READ = 64 << 10
DRAIN_AFTER_EXIT_S = 5.0  # output still arriving after the process ended


def _thread(target: Callable[[], None], name: str) -> None:
    threading.Thread(target=target, name=name, daemon=True).start()


async def feed(pipe: IO[bytes], data: bytes) -> None:
    """Write ``data`` to the sandbox's stdin, then close it. Code that
    does not read all of its stdin is fine (as with 1.7's worker)."""
    if not data:
        with contextlib.suppress(OSError):
            pipe.close()
        return
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def write() -> None:
        try:
            with contextlib.suppress(OSError):
                pipe.write(data)
                pipe.flush()
        finally:
            with contextlib.suppress(OSError):
                pipe.close()
            _post(loop, done)

    _thread(write, "sandbox-stdin")
    await done


def _post(loop: asyncio.AbstractEventLoop, done: asyncio.Future[None]) -> None:
    def settle() -> None:
        if not done.done():
            done.set_result(None)

    with contextlib.suppress(RuntimeError):  # the loop is gone
        loop.call_soon_threadsafe(settle)


class LineCutter:
    """Cuts output blocks into lines (without their newline) for ``on_line``;
    a long line is cut into pieces of ``MAX_LINE``."""

    def __init__(self, on_line: LineSink) -> None:
        self._on_line = on_line
        self._buf = bytearray()
        self.stopped = False

    async def feed(self, block: bytes) -> None:
        if self.stopped:
            return
        buf = self._buf
        buf += block
        start = 0
        while (end := buf.find(b"\n", start)) >= 0:
            # A long line that arrived whole is cut like one still coming.
            for cut in range(start, max(end, start + 1), MAX_LINE):
                await self._on_line(_text(buf[cut : min(cut + MAX_LINE, end)]))
            start = end + 1
        del buf[:start]
        while len(buf) >= MAX_LINE:
            await self._on_line(_text(buf[:MAX_LINE]))
            del buf[:MAX_LINE]

    async def end(self) -> None:
        if self._buf and not self.stopped:
            await self._on_line(_text(self._buf))
        self._buf.clear()


async def pump(*pipes: IO[bytes], on_line: LineSink) -> None:
    """Hand each output line of ``pipes`` (stdout and stderr) to ``on_line``
    until their end. One thread polls them and reads whichever is ready
    first, so lines keep the order they were written in, and it waits for
    each block's lines to be handled (backpressure). The pipes are closed
    at their end."""
    loop = asyncio.get_running_loop()
    cutters = {p.fileno(): LineCutter(on_line) for p in pipes}
    done: asyncio.Future[None] = loop.create_future()
    failed: list[BaseException] = []

    def read() -> None:
        poller = select.poll()
        for fd in cutters:
            poller.register(fd, select.POLLIN)
        open_fds = set(cutters)
        try:
            while open_fds:
                for fd, _ in sorted(poller.poll()):
                    block = os.read(fd, _READ)
                    if not block:
                        poller.unregister(fd)
                        open_fds.discard(fd)
                        continue
                    asyncio.run_coroutine_threadsafe(cutters[fd].feed(block), loop).result()
        except BaseException as err:
            failed.append(err)
        finally:
            for pipe in pipes:
                with contextlib.suppress(OSError):
                    pipe.close()
            _post(loop, done)

    _thread(read, "sandbox-output")
    try:
        await asyncio.shield(done)
    except asyncio.CancelledError:
        for cutter in cutters.values():
            cutter.stopped = True  # the thread ends at the pipes' end
        raise
    real = [e for e in failed if not isinstance(e, OSError | RuntimeError)]
    if real:
        raise real[0]
    for cutter in cutters.values():
        await cutter.end()


def _text(data: bytes | bytearray) -> str:
    return bytes(data).decode("utf-8", errors="replace")
