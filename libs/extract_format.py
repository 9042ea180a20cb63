"""The extract stream's framing (docs/decisions/0011-extract-restore-gc.md).

A framed extract is ``MAGIC`` and then frames: a 4-byte big-endian length and
one serialized ``pachbackup.ExtractRecord``. The trailer's checksum is the
BLAKE3 of every frame before the trailer's own, exactly as ``frame`` writes
them (length prefix included, magic excluded); ``Checksum`` is the one place
that computes it, for extract, restore and files alike.

Records are serialized deterministically (map entries sorted), so a record
that was parsed and serialized again (over gRPC, say) frames to the same
bytes and the checksum still holds.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterable, AsyncIterator

import blake3
from google.protobuf.message import DecodeError

from libs.api.internal.backup_pb2 import ExtractRecord
from libs.errors import InvalidArgument

FORMAT_VERSION = 1
MAGIC = b"PACHEXT\x01"
# A frame holds one record: at most a 1 MiB object block or one stored event
# message (NATS caps those well below this), or the header. Anything larger
# is corruption, not data.
MAX_FRAME_BYTES = 64 << 20

_LEN = struct.Struct(">I")


def record_bytes(record: ExtractRecord) -> bytes:
    """The record as it travels inside its frame."""
    return record.SerializeToString(deterministic=True)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def stored_events_bytes(seq: int, subject: bytes, batch: bytes) -> bytes:
    """``record_bytes(ExtractRecord(events=StoredEvents(seq, subject, batch)))``
    without building the messages: the hot path of an extract (a unit test
    holds the two equal)."""
    parts = []
    if seq:
        parts.append(b"\x08" + _varint(seq))
    if subject:
        parts.append(b"\x12" + _varint(len(subject)) + subject)
    if batch:
        parts.append(b"\x1a" + _varint(len(batch)))
        parts.append(batch)
    inner = sum(len(p) for p in parts)
    return b"".join([b"\x2a", _varint(inner), *parts])


def frame(data: bytes) -> bytes:
    """One frame around an already serialized record."""
    return _LEN.pack(len(data)) + data


class Checksum:
    """BLAKE3 over frames, as the trailer's ``checksum`` covers them."""

    def __init__(self) -> None:
        self._hash = blake3.blake3()

    def add_frame(self, framed: bytes) -> None:
        self._hash.update(framed)

    def add_record(self, data: bytes) -> None:
        """Add the frame of one serialized record (without building it)."""
        self._hash.update(_LEN.pack(len(data)))
        self._hash.update(data)

    def hexdigest(self) -> str:
        return str(self._hash.hexdigest())


async def encode_frames(records: AsyncIterable[ExtractRecord]) -> AsyncIterator[bytes]:
    """``MAGIC`` and then one frame per record."""
    yield MAGIC
    async for record in records:
        yield frame(record_bytes(record))


class _Reader:
    """Bytes from an async iterable of blocks of any size, read exactly."""

    def __init__(self, data: AsyncIterable[bytes]) -> None:
        self._it = aiter(data)
        self._buf = bytearray()
        self._pos = 0
        self.offset = 0  # bytes consumed so far

    async def _fill(self, n: int) -> bool:
        while len(self._buf) - self._pos < n:
            try:
                block = await anext(self._it)
            except StopAsyncIteration:
                return False
            if self._pos:
                del self._buf[: self._pos]
                self._pos = 0
            self._buf += block
        return True

    async def at_end(self) -> bool:
        return not await self._fill(1)

    async def read(self, n: int) -> bytes | None:
        """Exactly ``n`` bytes, or None (nothing consumed) when the data ends first."""
        if not await self._fill(n):
            return None
        out = bytes(self._buf[self._pos : self._pos + n])
        self._pos += n
        self.offset += n
        return out

    def available(self) -> int:
        return len(self._buf) - self._pos


async def decode_frames_raw(
    data: AsyncIterable[bytes], *, max_frame_bytes: int = MAX_FRAME_BYTES
) -> AsyncIterator[tuple[ExtractRecord, bytes]]:
    """Each record of a framed extract with the bytes its frame held (the
    inverse of ``encode_frames``).

    InvalidArgument names what is wrong: a bad magic, a frame cut short, a
    frame over ``max_frame_bytes``, a record that does not parse. A stream
    that simply ends between frames ends the iteration: whether the extract
    is complete is the trailer's business (``restore`` checks it)."""
    reader = _Reader(data)
    magic = await reader.read(len(MAGIC))
    if magic is None:
        got = reader.available()
        if got == 0:
            raise InvalidArgument("extract is empty: expected the magic PACHEXT\\x01 first")
        raise InvalidArgument(f"extract is truncated: {got} bytes, shorter than its magic")
    if magic != MAGIC:
        # Never quote the bytes: restore -u may be pointed at any file.
        raise InvalidArgument(f"not an extract: it does not start with the magic {MAGIC!r}")
    index = 0
    while not await reader.at_end():
        start = reader.offset
        head = await reader.read(_LEN.size)
        if head is None:
            raise InvalidArgument(
                f"extract is truncated: frame {index} at byte {start} "
                "is cut short inside its length"
            )
        (length,) = _LEN.unpack(head)
        if length > max_frame_bytes:
            raise InvalidArgument(
                f"extract is corrupt: frame {index} at byte {start} claims "
                f"{length} bytes, over the {max_frame_bytes}-byte limit"
            )
        body = await reader.read(length)
        if body is None:
            raise InvalidArgument(
                f"extract is truncated: frame {index} at byte {start} holds "
                f"{reader.available()} of its {length} bytes"
            )
        record = ExtractRecord()
        try:
            record.ParseFromString(body)
        except DecodeError as exc:
            raise InvalidArgument(
                f"extract is corrupt: frame {index} at byte {start} is not a record ({exc})"
            ) from None
        if record.WhichOneof("record") is None:
            raise InvalidArgument(
                f"extract is corrupt: frame {index} at byte {start} holds no record"
            )
        yield record, body
        index += 1


async def decode_frames(
    data: AsyncIterable[bytes], *, max_frame_bytes: int = MAX_FRAME_BYTES
) -> AsyncIterator[ExtractRecord]:
    """The records of a framed extract (the inverse of ``encode_frames``);
    errors as ``decode_frames_raw``."""
    async for record, _ in decode_frames_raw(data, max_frame_bytes=max_frame_bytes):
        yield record
