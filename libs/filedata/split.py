"""``put-file --split line|json|sql``: cut a stream into pieces of whole datums.

Pachyderm 1.7 semantics: a datum is a line (with its ``\\n``), a top-level JSON
value, or a row of a pg_dump's ``COPY ... FROM stdin;`` block. A piece closes
after the datum that brings it to ``target_datums`` datums or
``target_bytes`` bytes (whichever is set and reached first; one datum per
piece when neither is set). The caller stores each piece as a file named
``%016x``. For sql, everything up to and including the ``COPY`` line is the
directory's header and everything from the ``\\.`` line on is its footer.

Memory holds one datum and a block of up to ``BLOCK`` bytes, not a piece;
lines are cut straight from the incoming blocks (no line is ever joined, so
even one huge line streams), and a piece of many lines costs per block.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Literal

from libs.errors import InvalidArgument
from libs.filedata._json import json_values

Delimiter = Literal["line", "json", "sql"]
DELIMITERS: tuple[Delimiter, ...] = ("line", "json", "sql")
BLOCK = 1 << 20  # datums are handed on in blocks of about this many bytes


async def lines(blocks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """Each line with its ``\\n``; a last line without one is a datum too."""
    rest: list[bytes] = []
    async for block in blocks:
        block = bytes(block)
        start = 0
        while (nl := block.find(b"\n", start)) >= 0:
            if rest:
                rest.append(block[start : nl + 1])
                yield b"".join(rest)
                rest = []
            else:
                yield block[start : nl + 1]
            start = nl + 1
        if start < len(block):
            rest.append(block[start:])
    if rest:
        yield b"".join(rest)


class SqlRows:
    """The rows of a pg_dump; ``header``/``footer`` are set as they are read."""

    def __init__(self, blocks: AsyncIterable[bytes]) -> None:
        self._blocks = blocks
        self.header: bytes | None = None
        self.footer: bytes | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        it = aiter(lines(self._blocks))
        header: list[bytes] = []
        async for line in it:
            header.append(line)
            if line.startswith(b"COPY"):
                break
        else:
            raise InvalidArgument(
                "put-file --split sql: invalid pg_dump: no 'COPY ... FROM stdin;' line "
                "(missing row inserts)"
            )
        self.header = b"".join(header)
        async for line in it:
            if line.rstrip(b"\r\n") == b"\\.":
                footer = [line]
                async for more in it:
                    footer.append(more)
                self.footer = b"".join(footer)
                return
            yield line
        raise InvalidArgument("put-file --split sql: invalid pg_dump: missing footer ('\\.' line)")


class _LineCutter:
    """Line pieces cut straight from the blocks: newlines are found and
    counted with ``bytes.find`` / ``bytes.count``, so a piece of many lines
    costs per block, not per line. Holds one block."""

    def __init__(self, blocks: AsyncIterable[bytes]) -> None:
        self._blocks = aiter(blocks)
        self._buf = b""
        self._pos = 0
        self._eof = False

    async def more(self) -> bool:
        """Whether any byte is left (reading the next block if needed)."""
        while self._pos >= len(self._buf):
            if self._eof:
                return False
            try:
                self._buf, self._pos = bytes(await anext(self._blocks)), 0
            except StopAsyncIteration:
                self._eof = True
        return True

    async def piece(self, datums: int, size: int) -> AsyncIterator[bytes]:
        """The next piece: it closes after the line that makes it ``datums``
        lines or ``size`` bytes (0: no limit; one line if both are 0)."""
        if not (datums or size):
            datums = 1
        have_lines = have_bytes = 0
        while await self.more():
            buf, pos = self._buf, self._pos
            cut = -1  # where the piece ends in buf, if it ends in this block
            if size:
                nl = buf.find(b"\n", pos + max(size - have_bytes - 1, 0))
                cut = -1 if nl < 0 else nl + 1
            if datums:
                at = _after_nth_newline(
                    buf, pos, cut if cut >= 0 else len(buf), datums - have_lines
                )
                cut = at if at >= 0 else cut
            end = cut if cut >= 0 else len(buf)
            if datums:
                have_lines += buf.count(b"\n", pos, end)
            have_bytes += end - pos
            self._pos = end
            yield buf if pos == 0 and end == len(buf) else buf[pos:end]
            if cut >= 0:
                return


def _after_nth_newline(buf: bytes, start: int, end: int, n: int) -> int:
    """The index just after the ``n``-th newline of ``buf[start:end]`` (-1 if
    it has fewer), in time proportional to how far that is from ``start``:
    count in doubling windows, then bisect the window that holds it."""
    window = 256
    while start < end:
        stop = min(end, start + window)
        found = buf.count(b"\n", start, stop)
        if found < n:
            n -= found
            start, window = stop, window * 2
            continue
        while stop - start > 256:
            mid = (start + stop) // 2
            found = buf.count(b"\n", start, mid)
            if found >= n:
                stop = mid
            else:
                n, start = n - found, mid
        for _ in range(n):
            start = buf.find(b"\n", start) + 1
        return start
    return -1


class Split:
    """Pieces of a stream: ``async for piece in Split(...)``, each piece an async
    stream of byte blocks to store as one file. Consume each piece before asking
    for the next (an unread rest is skipped). For sql, ``header`` and ``footer``
    are set once the pieces are exhausted."""

    def __init__(
        self,
        blocks: AsyncIterable[bytes],
        delimiter: Delimiter,
        target_datums: int = 0,
        target_bytes: int = 0,
    ) -> None:
        if delimiter not in DELIMITERS:
            raise InvalidArgument(
                f"put-file --split must be one of line, json, sql; got {delimiter!r}",
                delimiter=delimiter,
            )
        if target_datums < 0 or target_bytes < 0:
            raise InvalidArgument(
                f"--target-file-datums and --target-file-bytes must be >= 0, "
                f"got {target_datums} and {target_bytes}"
            )
        self._datums = target_datums
        self._bytes = target_bytes
        self._lines = _LineCutter(blocks) if delimiter == "line" else None
        self._sql = SqlRows(blocks) if delimiter == "sql" else None
        # json and sql go datum by datum; lines are cut from the blocks
        self._source: AsyncIterator[bytes] | None = None
        if self._sql is not None:
            self._source = aiter(self._sql)
        elif delimiter == "json":
            self._source = json_values(blocks)
        self._next: bytes | None = None
        self._done = False

    @property
    def header(self) -> bytes | None:
        return None if self._sql is None else self._sql.header

    @property
    def footer(self) -> bytes | None:
        return None if self._sql is None else self._sql.footer

    async def _more(self) -> bool:
        if self._lines is not None:
            return await self._lines.more()
        return await self._peek() is not None

    async def _peek(self) -> bytes | None:
        assert self._source is not None
        while self._next is None and not self._done:
            try:
                datum = await anext(self._source)
            except StopAsyncIteration:
                self._done = True
                break
            if datum:
                self._next = datum
        return self._next

    async def __aiter__(self) -> AsyncIterator[AsyncIterator[bytes]]:
        while await self._more():
            if self._lines is not None:
                piece = self._lines.piece(self._datums, self._bytes)
            else:
                piece = self._piece()
            yield piece
            async for _ in piece:  # skip what the consumer left unread
                pass

    async def _piece(self) -> AsyncIterator[bytes]:
        datums = size = 0
        block: list[bytes] = []
        gathered = 0
        while (datum := await self._peek()) is not None:
            self._next = None
            datums += 1
            size += len(datum)
            block.append(datum)
            gathered += len(datum)
            if gathered >= BLOCK:
                yield b"".join(block)
                block, gathered = [], 0
            if (
                (self._bytes and size >= self._bytes)
                or (self._datums and datums >= self._datums)
                or not (self._bytes or self._datums)
            ):
                break
        if block:
            yield b"".join(block)
