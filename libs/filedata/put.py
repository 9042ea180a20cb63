"""Store a split put-file: every piece as a file's refs, plus sql header/footer."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

from libs.filedata.split import Delimiter, Split
from libs.filedata.writer import FileWriter
from libs.trees.model import DataRef


@dataclass(frozen=True)
class SplitFiles:
    """Refs of each piece in order (file ``%016x`` of ``first + i``), and for sql
    the directory's header and footer refs (``None`` for line and json)."""

    pieces: list[list[DataRef]]
    header: list[DataRef] | None = None
    footer: list[DataRef] | None = None


async def put_split(
    writer: FileWriter,
    blocks: AsyncIterable[bytes],
    delimiter: Delimiter,
    target_datums: int = 0,
    target_bytes: int = 0,
) -> SplitFiles:
    """Split ``blocks`` and write every piece with ``writer``.

    Like ``write_file``, packed refs are durable only after ``writer.flush()``."""
    split = Split(blocks, delimiter, target_datums, target_bytes)
    pieces = [await writer.write_file(piece) async for piece in split]
    if delimiter != "sql":
        return SplitFiles(pieces)
    header = await writer.write_file(_once(split.header or b""))
    footer = await writer.write_file(_once(split.footer or b""))
    return SplitFiles(pieces, header, footer)


def piece_name(index: int) -> str:
    """The file name of the ``index``-th piece, as Pachyderm 1.7 names it."""
    return f"{index:016x}"


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
