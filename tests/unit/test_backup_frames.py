"""The extract stream's framing: MAGIC, 4-byte lengths, records, checksum."""

from __future__ import annotations

from collections.abc import AsyncIterator

import blake3
import pytest

from libs.api.internal.backup_pb2 import (
    ExtractHeader,
    ExtractRecord,
    ExtractTrailer,
    ObjectEnd,
    ObjectStart,
    StoredEvents,
)
from libs.errors import InvalidArgument
from libs.extract_format import MAGIC, Checksum, decode_frames, encode_frames, frame, record_bytes


def _records() -> list[ExtractRecord]:
    return [
        ExtractRecord(
            header=ExtractHeader(
                format_version=1, extract_id="x", last_seq=2, reaction_floors={"b": 1, "a": 2}
            )
        ),
        ExtractRecord(object=ObjectStart(key="trees/t", size=3)),
        ExtractRecord(object_data=b"abc"),
        ExtractRecord(object_end=ObjectEnd(blake3=blake3.blake3(b"abc").hexdigest())),
        ExtractRecord(events=StoredEvents(seq=1, subject="ev.a.b.c", batch=b"\x01" * 300)),
        ExtractRecord(events=StoredEvents(seq=2, subject="ev.a.b.c", batch=b"")),
        ExtractRecord(trailer=ExtractTrailer(events=2, objects=1, object_bytes=3, checksum="c")),
    ]


async def _aiter(items: list[ExtractRecord]) -> AsyncIterator[ExtractRecord]:
    for item in items:
        yield item


async def _blocks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def _encoded(records: list[ExtractRecord]) -> bytes:
    return b"".join([b async for b in encode_frames(_aiter(records))])


async def _decoded(data: bytes, size: int = 5) -> list[ExtractRecord]:
    return [r async for r in decode_frames(_blocks(data, size))]


async def test_frames_round_trip_whatever_the_block_size() -> None:
    records = _records()
    data = await _encoded(records)
    assert data.startswith(MAGIC)
    first = record_bytes(records[0])
    assert data[8:12] == len(first).to_bytes(4, "big") and data[12 : 12 + len(first)] == first
    for size in (1, 3, 7, 64, 1 << 20):
        assert await _decoded(data, size) == records


async def test_magic_only_is_an_empty_record_stream() -> None:
    assert await _decoded(MAGIC) == []


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "extract is empty"),
        (b"PACH", "truncated: 4 bytes, shorter than its magic"),
        (b"PK\x03\x04zipfile", "not an extract: it does not start with the magic"),
        (b"PACHEXT\x02", "not an extract"),
        (MAGIC + b"\x00\x00", "truncated: frame 0 at byte 8 is cut short inside its length"),
        (MAGIC + b"\x00\x00\x00\x09abc", "truncated: frame 0 at byte 8 holds 3 of its 9 bytes"),
        (MAGIC + b"\x7f\xff\xff\xff", "frame 0 at byte 8 claims 2147483647 bytes, over the"),
        (MAGIC + b"\x00\x00\x00\x02\xff\xff", "corrupt: frame 0 at byte 8 is not a record"),
        (MAGIC + b"\x00\x00\x00\x00", "corrupt: frame 0 at byte 8 holds no record"),
    ],
)
async def test_bad_streams_are_refused_clearly(data: bytes, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        await _decoded(data)


async def test_a_frame_cut_short_after_good_ones_names_its_place() -> None:
    data = await _encoded(_records())
    with pytest.raises(InvalidArgument, match="truncated: frame 6 at byte"):
        await _decoded(data[:-2])


async def test_frame_limit_is_a_parameter() -> None:
    data = await _encoded(_records())
    with pytest.raises(InvalidArgument, match="over the 100-byte limit"):
        [r async for r in decode_frames(_blocks(data, 9), max_frame_bytes=100)]


def test_checksum_is_blake3_of_the_frames() -> None:
    records = _records()
    whole = Checksum()
    by_frame = Checksum()
    expected = blake3.blake3()
    for r in records:
        data = record_bytes(r)
        whole.add_record(data)
        by_frame.add_frame(frame(data))
        expected.update(frame(data))
    assert whole.hexdigest() == by_frame.hexdigest() == expected.hexdigest()


def test_record_bytes_are_deterministic_after_a_round_trip() -> None:
    header = ExtractRecord(
        header=ExtractHeader(reaction_floors={f"r{i}": i for i in range(50, 0, -1)})
    )
    parsed = ExtractRecord()
    parsed.ParseFromString(header.SerializeToString())
    other = ExtractRecord(header=ExtractHeader(reaction_floors={f"r{i}": i for i in range(1, 51)}))
    assert record_bytes(parsed) == record_bytes(header) == record_bytes(other)


@pytest.mark.parametrize("seq", [0, 1, 127, 128, 300, 1 << 32, (1 << 64) - 1])
@pytest.mark.parametrize("subject", ["", "ev.pfs.commit.x", "ev.a." + "s" * 200])
@pytest.mark.parametrize("batch_len", [0, 1, 127, 128, 70_000])
def test_stored_events_bytes_equal_the_record_serialization(
    seq: int, subject: str, batch_len: int
) -> None:
    from libs.extract_format import stored_events_bytes

    batch = bytes(i % 251 for i in range(batch_len))
    record = ExtractRecord(events=StoredEvents(seq=seq, subject=subject, batch=batch))
    assert stored_events_bytes(seq, subject.encode(), batch) == record_bytes(record)
