"""A temporary file of stored event messages, written while an extract
arrives and read back once it is validated, so a restore never holds the
log in memory."""

from __future__ import annotations

import asyncio
import os
import struct
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType

from libs.errors import Internal

# seq, subject length, data length
_ENTRY = struct.Struct(">QHI")
_FLUSH_AT = 4 << 20
_READ_BLOCK = 4 << 20


class EventSpool:
    """Entries (seq, subject, data) appended in order and read back in order.

    Use as an async context manager: the file is removed on exit."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="restore-", suffix=".spool", dir=directory)
        self.path = Path(name)
        self._file = os.fdopen(fd, "w+b", buffering=0)
        self._buf = bytearray()
        self.count = 0
        self.bytes = 0

    async def __aenter__(self) -> EventSpool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)

    async def add(self, seq: int, subject: str, data: bytes) -> None:
        encoded = subject.encode()
        self._buf += _ENTRY.pack(seq, len(encoded), len(data))
        self._buf += encoded
        self._buf += data
        self.count += 1
        self.bytes += len(data)
        if len(self._buf) >= _FLUSH_AT:
            await self.flush()

    async def flush(self) -> None:
        if self._buf:
            block, self._buf = bytes(self._buf), bytearray()
            await asyncio.to_thread(self._file.write, block)

    async def entries(self) -> AsyncIterator[tuple[int, str, bytes]]:
        """Every entry added, in order (flushes first)."""
        await self.flush()
        await asyncio.to_thread(self._file.seek, 0)
        buf = b""
        pos = 0
        read = 0
        while True:
            block = await asyncio.to_thread(self._file.read, _READ_BLOCK)
            if not block:
                break
            buf = buf[pos:] + block
            pos = 0
            while len(buf) - pos >= _ENTRY.size:
                seq, slen, dlen = _ENTRY.unpack_from(buf, pos)
                end = pos + _ENTRY.size + slen + dlen
                if end > len(buf):
                    break
                start = pos + _ENTRY.size
                yield seq, buf[start : start + slen].decode(), buf[start + slen : end]
                read += 1
                pos = end
        if pos != len(buf) or read != self.count:
            raise Internal(f"restore spool {self.path} holds {read} of {self.count} entries")
