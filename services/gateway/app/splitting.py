"""``put-file --split`` and headers/footers as ``FileWrite``s for pfs.

``split_writes`` cuts one stream into pieces with ``libs.filedata.Split``,
stores each piece as it is cut, and yields one ``FileWrite{path=directory,
split=true}`` per piece, in order (pfs names the pieces ``%016x``, numbering
on from the pieces the directory already has). For ``sql`` it then yields
the dump's header and footer as the directory's ``HEADER`` / ``FOOTER``.
Memory holds one datum and one block, never a piece or the stream.

Like ``FileWriter.write_file``, the refs in these writes are durable only
after the writer's next ``flush()``."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

from libs.api.internal import pfs_files_pb2 as internal
from libs.api.internal import tree_pb2
from libs.api.pfs import pfs_pb2 as pfs
from libs.errors import InvalidArgument
from libs.filedata import Delimiter, FileWriter, Split
from libs.trees import DataRef

DELIMITERS: dict[int, Delimiter] = {pfs.LINE: "line", pfs.JSON: "json", pfs.SQL: "sql"}


def delimiter_name(value: int) -> Delimiter:
    """The splitter for a ``pfs.Delimiter`` other than NONE."""
    try:
        return DELIMITERS[value]
    except KeyError:
        raise InvalidArgument(
            f"put-file: unknown delimiter {value}; use LINE, JSON or SQL", delimiter=value
        ) from None


async def split_writes(
    writer: FileWriter,
    path: str,
    blocks: AsyncIterable[bytes],
    delimiter: Delimiter,
    target_datums: int = 0,
    target_bytes: int = 0,
) -> AsyncIterator[internal.FileWrite]:
    """The writes of ``blocks`` split into the directory ``path``."""
    split = Split(blocks, delimiter, target_datums, target_bytes)
    async for piece in split:
        refs = await writer.write_file(piece)
        yield internal.FileWrite(path=path, refs=as_pb(refs), split=True)
    if split.header is not None:
        yield await metadata_write(writer, path, internal.HEADER, split.header)
    if split.footer is not None:
        yield await metadata_write(writer, path, internal.FOOTER, split.footer)


async def metadata_write(
    writer: FileWriter, directory: str, kind: internal.WriteKind.ValueType, value: bytes
) -> internal.FileWrite:
    """Set the header or footer of ``directory`` to ``value`` (empty: clear it)."""
    refs = await writer.write_file(_once(value))
    return internal.FileWrite(path=directory, refs=as_pb(refs), kind=kind)


def as_pb(refs: list[DataRef]) -> list[tree_pb2.DataRef]:
    return [tree_pb2.DataRef(chunk=r.chunk, offset=r.offset, length=r.length) for r in refs]


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
