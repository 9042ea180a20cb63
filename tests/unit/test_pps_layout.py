"""Datum layout: input trees written under <scratch>/pfs (no sandbox needed)."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from libs.api.internal import pps_work_pb2 as pachinternal
from libs.errors import InvalidArgument, NotFound
from libs.filedata import FileWriter
from libs.objects import LocalObjectStore
from libs.trees import Op, Put, SetHeader, build
from services.pps.worker.layout import InputIndex, LazyFeeder, lay_out, tree_entries


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "objects", durable=False)


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _tree(store: LocalObjectStore, files: dict[str, bytes], *extra: Op) -> str:
    writer = FileWriter(store)
    ops: list[Op] = [Put(p, await writer.write_file(_one(d))) for p, d in files.items()]
    await writer.flush()

    async def stream() -> AsyncIterator[Op]:
        for op in [*ops, *extra]:
            yield op

    return (await build(store, None, stream())).hash


def _input(
    name: str, tree: str, path: str, *, lazy: bool = False, empty_files: bool = False
) -> pachinternal.DatumInput:
    return pachinternal.DatumInput(
        name=name, tree=tree, path=path, commit="c", lazy=lazy, empty_files=empty_files
    )


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


async def test_matched_paths_kept_under_each_input(store: LocalObjectStore, tmp_path: Path) -> None:
    writer = FileWriter(store)
    head = await writer.write_file(_one(b"#"))
    await writer.flush()
    a = await _tree(store, {"/x/1": b"one", "/x/sub/2": b"two", "/y": b"no"}, SetHeader("/x", head))
    b = await _tree(store, {"/f": b"eff"})
    task = pachinternal.DatumTask(id="d", inputs=[_input("a", a, "/x"), _input("b", b, "/")])
    layout = await lay_out(task, store, tmp_path / "pfs")
    assert _files(tmp_path / "pfs") == {"a/x/1": b"#one", "a/x/sub/2": b"two", "b/f": b"eff"}
    assert layout.download_bytes == len(b"#one") + 3 + 3 and layout.seconds > 0
    assert layout.lazy == []


async def test_empty_files_and_lazy_pipes(store: LocalObjectStore, tmp_path: Path) -> None:
    tree = await _tree(store, {"/d/a": b"alpha", "/d/b": b"beta"})
    task = pachinternal.DatumTask(
        inputs=[_input("e", tree, "/d", empty_files=True), _input("l", tree, "/d", lazy=True)]
    )
    layout = await lay_out(task, store, tmp_path / "pfs")
    assert _files(tmp_path / "pfs" / "e") == {"d/a": b"", "d/b": b""}
    pipes = [p for p, _ in layout.lazy]
    assert [p.name for p in pipes] == ["a", "b"]
    assert all(stat.S_ISFIFO(os.stat(p).st_mode) for p in pipes)
    assert layout.download_bytes == 0

    feeder = LazyFeeder(store, layout.lazy)
    feeder.start()
    got = await asyncio.to_thread(pipes[1].read_bytes)  # opening it starts the feed
    assert got == b"beta"
    assert await asyncio.wait_for(feeder.stop(), 2) == 4  # the unopened pipe does not block


async def test_lazy_reader_that_stops_early(store: LocalObjectStore, tmp_path: Path) -> None:
    big = os.urandom(1 << 20)
    tree = await _tree(store, {"/big": big})
    layout = await lay_out(
        pachinternal.DatumTask(inputs=[_input("l", tree, "/big", lazy=True)]),
        store,
        tmp_path / "pfs",
    )
    feeder = LazyFeeder(store, layout.lazy)
    feeder.start()

    def read_some() -> bytes:
        with open(layout.lazy[0][0], "rb") as f:
            return f.read(1000)

    assert await asyncio.to_thread(read_some) == big[:1000]
    fed = await asyncio.wait_for(feeder.stop(), 2)
    assert 1000 <= fed <= len(big)


async def test_bad_inputs(store: LocalObjectStore, tmp_path: Path) -> None:
    tree = await _tree(store, {"/a": b"a"})
    with pytest.raises(InvalidArgument, match="'out'"):
        await lay_out(
            pachinternal.DatumTask(inputs=[_input("out", tree, "/a")]), store, tmp_path / "p1"
        )
    with pytest.raises(NotFound, match="/nope"):
        await lay_out(
            pachinternal.DatumTask(inputs=[_input("in", tree, "/nope")]), store, tmp_path / "p2"
        )


async def test_input_index(store: LocalObjectStore) -> None:
    tree = await _tree(store, {"/d/a": b"a", "/d/s/b": b"bb", "/e": b"e"})
    index = InputIndex(store, [_input("in", tree, "/d")])
    assert index.locate("/pfs/in/d/a") is not None
    assert index.locate("/pfs/in/d") is not None
    assert index.locate("/pfs/in/e") is None  # not part of this datum
    assert index.locate("/pfs/out/d/a") is None and index.locate("/etc/passwd") is None
    entries = await index.entries("/pfs/in/d/s")
    assert entries is not None
    assert [
        (e.rel, None if e.refs is None else sum(r.length for r in e.refs)) async for e in entries
    ] == [
        ("", None),
        ("b", 2),
    ]
    assert await index.entries("/pfs/in/d/missing") is None
    assert [e.rel async for e in tree_entries(store, tree, "/")] == [
        "",
        "d",
        "d/a",
        "d/s",
        "d/s/b",
        "e",
    ]
