"""``Split(..., "line")`` cuts pieces from whole blocks; it must cut exactly
where the datum-by-datum rule does, for any block boundaries and limits."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest

from libs.filedata import Split


async def blocks_of(data: bytes, sizes: list[int]) -> AsyncIterator[bytes]:
    at = 0
    for n in sizes:
        yield data[at : at + n]
        at += n
    if at < len(data):
        yield data[at:]


def reference(data: bytes, datums: int, size: int) -> list[bytes]:
    """The rule, line by line: a piece closes after the line that makes it
    ``datums`` lines or ``size`` bytes (one line when neither is set)."""
    lines = data.splitlines(keepends=True)
    pieces: list[bytes] = []
    piece: list[bytes] = []
    b = 0
    for line in lines:
        piece.append(line)
        b += len(line)
        if (size and b >= size) or (datums and len(piece) >= datums) or not (size or datums):
            pieces.append(b"".join(piece))
            piece, b = [], 0
    if piece:
        pieces.append(b"".join(piece))
    return pieces


async def cut(data: bytes, sizes: list[int], datums: int, size: int) -> list[bytes]:
    split = Split(blocks_of(data, sizes), "line", datums, size)
    return [b"".join([b async for b in piece]) async for piece in split]


@pytest.mark.parametrize("seed", range(40))
async def test_block_cutting_matches_the_line_rule(seed: int) -> None:
    rnd = random.Random(seed)
    lines = [b"x" * rnd.choice([0, 0, 1, 3, 10, 50]) + b"\n" for _ in range(rnd.randint(0, 60))]
    data = b"".join(lines) + (b"tail" if rnd.random() < 0.5 else b"")
    sizes = [rnd.choice([0, 1, 2, 7, 64, 1000]) for _ in range(len(data))]
    datums = rnd.choice([0, 1, 2, 5])
    size = rnd.choice([0, 1, 4, 20, 100])
    assert await cut(data, sizes, datums, size) == reference(data, datums, size)


async def test_empty_blocks_and_input() -> None:
    assert await cut(b"", [0, 0], 0, 0) == []
    assert await cut(b"a\nb\n", [0, 1, 0, 0, 3], 0, 0) == [b"a\n", b"b\n"]


@pytest.mark.parametrize("datums", [1, 7, 300, 5000])
@pytest.mark.parametrize("size", [0, 1, 999, 70_000])
async def test_big_blocks_many_lines(datums: int, size: int) -> None:
    rnd = random.Random(datums * 31 + size)
    data = b"".join(b"z" * rnd.choice([0, 1, 2, 30, 700]) + b"\n" for _ in range(20_000))
    sizes = [rnd.choice([1, 4096, 100_000, 1 << 20]) for _ in range(40)]
    assert await cut(data, sizes, datums, size) == reference(data, datums, size)
