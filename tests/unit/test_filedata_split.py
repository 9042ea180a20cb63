"""put-file --split line|json|sql: pieces, limits, header/footer, bad input."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from libs.errors import InvalidArgument
from libs.filedata import Split


async def blocks_of(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        await asyncio.sleep(0)
        yield data[i : i + size]


async def pieces(
    data: bytes, delimiter: str, datums: int = 0, nbytes: int = 0, block: int = 3
) -> list[bytes]:
    split = Split(blocks_of(data, block), delimiter, datums, nbytes)  # type: ignore[arg-type]
    return [b"".join([b async for b in piece]) async for piece in split]


@pytest.mark.parametrize("block", [1, 2, 5, 1000])
async def test_lines_one_per_piece_by_default(block: int) -> None:
    assert await pieces(b"a\nbb\n\nccc", "line", block=block) == [b"a\n", b"bb\n", b"\n", b"ccc"]


async def test_lines_target_datums() -> None:
    data = b"".join(b"%d\n" % i for i in range(7))
    assert await pieces(data, "line", datums=3) == [b"0\n1\n2\n", b"3\n4\n5\n", b"6\n"]


async def test_lines_target_bytes_closes_on_the_datum_that_reaches_it() -> None:
    data = b"aaaa\nb\ncc\ndddddddd\ne\n"
    assert await pieces(data, "line", nbytes=6) == [b"aaaa\nb\n", b"cc\ndddddddd\n", b"e\n"]


async def test_lines_whichever_limit_first() -> None:
    data = b"a\nb\nc\nlong-line\nd\n"
    assert await pieces(data, "line", datums=2, nbytes=6) == [
        b"a\nb\n",
        b"c\nlong-line\n",
        b"d\n",
    ]


async def test_empty_input_has_no_pieces() -> None:
    assert await pieces(b"", "line") == []
    assert await pieces(b"  \n ", "json") == []


async def test_unread_piece_is_skipped() -> None:
    split = Split(blocks_of(b"1\n2\n3\n4\n5\n", 1), "line", target_datums=2)
    got: list[bytes] = []
    async for piece in split:
        if len(got) % 2:
            got.append(b"".join([b async for b in piece]))
        else:
            got.append(b"skipped")
    assert got == [b"skipped", b"3\n4\n", b"skipped"]


async def test_json_values_with_tricky_strings() -> None:
    values = [
        {"a": 'x}]"{[', "b": [1, {"c": "\\"}]},
        [1, [2, [3]]],
        'str "with" ] brackets {',
        42,
        -1.5e3,
        True,
        None,
        {},
    ]
    text = b" \n".join(json.dumps(v).encode() for v in values) + b"\n"
    for block in (1, 2, 7, 4096):
        got = await pieces(text, "json", block=block)
        assert [json.loads(p) for p in got] == values
        assert got[0] == json.dumps(values[0]).encode()  # exactly as written


async def test_json_adjacent_values_and_limits() -> None:
    assert await pieces(b'{"a":1}{"b":2}[3]', "json", datums=2) == [b'{"a":1}{"b":2}', b"[3]"]
    assert await pieces(b'{"a": 1}\n{"b": 2}\n[3]', "json", nbytes=9) == [
        b'{"a": 1}{"b": 2}',
        b"[3]",
    ]


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b'{"a": [1, 2}', "unterminated JSON value"),
        (b'{"a": "b}', "unterminated JSON value"),
        (b'{"a": 1} ]', "unexpected ']'"),
        (b"{a: 1}", "invalid JSON value"),
        (b"[1, 2,]", "invalid JSON value"),
        (b"1, 2", "invalid JSON value"),
        (b"NaN", "invalid JSON value"),
    ],
)
async def test_json_malformed(data: bytes, problem: str) -> None:
    with pytest.raises(InvalidArgument, match=problem):
        await pieces(data, "json")


HEADER = (
    b"--\n-- PostgreSQL database dump\n--\nSET statement_timeout = 0;\n"
    b"CREATE TABLE t (a int, b text);\n"
    b"COPY public.t (a, b) FROM stdin;\n"
)
ROWS = [b"1\tone\n", b"2\ttwo\n", b"3\tthree\n"]
FOOTER = b"\\.\n\n\nALTER TABLE ONLY t ADD CONSTRAINT t_pkey PRIMARY KEY (a);\n"


@pytest.mark.parametrize("block", [1, 4, 4096])
async def test_sql_header_rows_footer(block: int) -> None:
    split = Split(blocks_of(HEADER + b"".join(ROWS) + FOOTER, block), "sql", target_datums=2)
    got = [b"".join([b async for b in p]) async for p in split]
    assert got == [ROWS[0] + ROWS[1], ROWS[2]]
    assert split.header == HEADER
    assert split.footer == FOOTER


async def test_sql_without_rows_keeps_header_and_footer() -> None:
    split = Split(blocks_of(HEADER + b"\\.", 5), "sql")
    assert [p async for p in split] == []
    assert (split.header, split.footer) == (HEADER, b"\\.")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"SET x = 1;\nCREATE TABLE t (a int);\n", "no 'COPY"),
        (HEADER + ROWS[0], "missing footer"),
    ],
)
async def test_sql_malformed(data: bytes, problem: str) -> None:
    with pytest.raises(InvalidArgument, match=problem):
        await pieces(data, "sql")


async def test_bad_options() -> None:
    with pytest.raises(InvalidArgument, match="one of line, json, sql"):
        Split(blocks_of(b"", 1), "csv")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=">= 0"):
        Split(blocks_of(b"", 1), "line", target_datums=-1)
