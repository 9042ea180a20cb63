"""Find whole top-level JSON values in a byte stream, without holding it all.

Boundaries come from a small scanner (strings, escapes, bracket depth); each
complete value is then checked with ``json.loads``, as Pachyderm's decoder
rejects malformed values. A value is returned exactly as written.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterable, AsyncIterator

from libs.errors import InvalidArgument

_WS = re.compile(rb"[ \t\r\n]*")
_IN_CONTAINER = re.compile(rb'["\[\]{}]')
_IN_STRING = re.compile(rb'["\\]')
_SCALAR_END = re.compile(rb'[ \t\r\n\[\]{}",:]')
_OPEN, _CLOSE = b"[{", b"]}"


class _Scanner:
    def __init__(self) -> None:
        self.buf = bytearray()  # the open value (if any) and what is not scanned yet
        self.start = -1  # where the current value starts in buf; -1: between values
        self.pos = 0  # scanned up to here
        self.depth = 0
        self.in_string = False
        self.scalar = False
        self.consumed = 0  # bytes of input before buf

    def feed(self, block: bytes) -> list[bytes]:
        cut = self.pos if self.start < 0 else self.start
        if cut:  # drop what is done; an open value's start stays at 0, so it is copied once
            del self.buf[:cut]
            self.consumed += cut
            self.pos -= cut
            if self.start >= 0:
                self.start -= cut
        self.buf += block
        values = []
        while (value := self._next()) is not None:
            values.append(value)
        return values

    def _next(self) -> bytes | None:
        buf = self.buf
        while True:
            if self.start < 0:
                self.pos = _skip_space(buf, self.pos)
                if self.pos >= len(buf):
                    return None
                self.start = self.pos
                first = bytes(buf[self.pos : self.pos + 1])
                if first in _OPEN:
                    self.depth, self.pos = 1, self.pos + 1
                elif first == b'"':
                    self.in_string, self.pos = True, self.pos + 1
                elif first in _CLOSE:
                    raise self._error(f"unexpected {first.decode()!r}", self.pos)
                else:
                    self.scalar = True
            if self.in_string:
                m = _IN_STRING.search(buf, self.pos)
                if m is None or (m.end() >= len(buf) and m.group() == b"\\"):
                    self.pos = len(buf) if m is None else m.start()
                    return None
                if m.group() == b"\\":
                    self.pos = m.end() + 1
                    continue
                self.in_string, self.pos = False, m.end()
            elif self.scalar:
                m = _SCALAR_END.search(buf, self.pos)
                if m is None:
                    self.pos = len(buf)
                    return None
                self.scalar, self.pos = False, m.start()
            else:
                m = _IN_CONTAINER.search(buf, self.pos)
                if m is None:
                    self.pos = len(buf)
                    return None
                self.pos = m.end()
                c = m.group()
                if c == b'"':
                    self.in_string = True
                    continue
                self.depth += 1 if c in _OPEN else -1
            if self.depth == 0 and not self.in_string and not self.scalar:
                return self._take()

    def _take(self) -> bytes:
        value = bytes(self.buf[self.start : self.pos])
        _validate(value, self.consumed + self.start)
        self.start = -1
        return value

    def finish(self) -> bytes | None:
        if self.start < 0:
            return None
        if self.scalar:
            self.scalar = False
            return self._take()
        raise self._error("unterminated JSON value at end of input", self.start)

    def _error(self, what: str, at: int) -> InvalidArgument:
        offset = self.consumed + at
        return InvalidArgument(f"put-file --split json: {what} at byte {offset}", offset=offset)


def _skip_space(buf: bytearray, pos: int) -> int:
    m = _WS.match(buf, pos)
    return pos if m is None else m.end()


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _validate(value: bytes, offset: int) -> None:
    try:
        json.loads(value, parse_constant=_no_constants)
    except ValueError as exc:
        raise InvalidArgument(
            f"put-file --split json: invalid JSON value at byte {offset}: {exc}", offset=offset
        ) from None


async def json_values(blocks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """Yield each top-level JSON value of the stream, exactly as written."""
    scanner = _Scanner()
    async for block in blocks:
        for value in scanner.feed(block):
            yield value
    last = scanner.finish()
    if last is not None:
        yield last
