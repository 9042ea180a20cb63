"""External sort of a build's ops by (path, sequence number), in bounded memory.

Ops are buffered up to ``run_bytes``, sorted and written as a run to a
temporary directory; ``merged`` streams the k-way merge of all runs. A build
that fits in one buffer never touches the disk.
"""

from __future__ import annotations

import asyncio
import heapq
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

Record = tuple[bytes, int, bytes]  # (path sort key, sequence number, encoded TreeOp)

_HEAD = struct.Struct(">HIQ")  # key length, op length, sequence number
DEFAULT_RUN_BYTES = 32 << 20


class OpSorter:
    def __init__(self, spill_dir: Path | None = None, run_bytes: int = DEFAULT_RUN_BYTES) -> None:
        self._spill_dir = spill_dir
        self._run_bytes = run_bytes
        self._buf: list[Record] = []
        self._bytes = 0
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._runs: list[Path] = []
        self._open: list[BinaryIO] = []

    async def add(self, key: bytes, seq: int, data: bytes) -> None:
        self._buf.append((key, seq, data))
        self._bytes += len(key) + len(data) + 120  # + the tuple and object headers
        if self._bytes >= self._run_bytes:
            await self._spill()

    async def _spill(self) -> None:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="tree-build-", dir=self._spill_dir)
        path = Path(self._tmp.name) / f"run-{len(self._runs):06d}"
        buf, self._buf, self._bytes = self._buf, [], 0
        await asyncio.to_thread(_write_run, path, buf)
        self._runs.append(path)

    def merged(self) -> Iterator[Record]:
        """All records in (key, seq) order; call once, after the last ``add``."""
        self._buf.sort()
        if not self._runs:
            return iter(self._buf)
        streams: list[Iterator[Record]] = [iter(self._buf)]
        for path in self._runs:
            f = path.open("rb", buffering=1 << 16)
            self._open.append(f)
            streams.append(_read_run(f))
        return heapq.merge(*streams)

    def close(self) -> None:
        for f in self._open:
            f.close()
        self._open.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _write_run(path: Path, records: list[Record]) -> None:
    records.sort()
    with path.open("wb", buffering=1 << 20) as f:
        for key, seq, data in records:
            f.write(_HEAD.pack(len(key), len(data), seq))
            f.write(key)
            f.write(data)


def _read_run(f: BinaryIO) -> Iterator[Record]:
    while head := f.read(_HEAD.size):
        klen, dlen, seq = _HEAD.unpack(head)
        key = f.read(klen)
        yield key, seq, f.read(dlen)
