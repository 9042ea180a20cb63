"""Upload of /pfs/out: files, symlinks resolved as the sandbox sees them."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from libs.api.internal import pps_work_pb2 as pachinternal
from libs.errors import FailedPrecondition
from libs.filedata import FileWriter, read_refs
from libs.objects import LocalObjectStore
from libs.trees import EMPTY_ROOT, Op, Put, build, effective_refs, walk
from services.pps.worker.layout import InputIndex, lay_out
from services.pps.worker.upload import upload

HOST_FILE = "/etc/passwd"  # a host file the sandbox sees read-only


def _host_bytes() -> bytes:
    return Path(HOST_FILE).read_bytes()


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "objects", durable=False)


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _tree(store: LocalObjectStore, files: dict[str, bytes]) -> str:
    writer = FileWriter(store)
    ops: list[Op] = [Put(p, await writer.write_file(_one(d))) for p, d in files.items()]
    await writer.flush()

    async def stream() -> AsyncIterator[Op]:
        for op in ops:
            yield op

    return (await build(store, None, stream())).hash


async def _files(store: LocalObjectStore, root: str) -> dict[str, bytes]:
    out = {}
    async for path, node in walk(store, root):
        if not node.is_dir:
            refs = await effective_refs(store, root, path)
            out[path] = b"".join([b async for b in read_refs(store, refs)])
    return out


async def _datum(store: LocalObjectStore, tmp_path: Path) -> tuple[Path, InputIndex, str]:
    tree = await _tree(store, {"/img/a.png": b"A" * 100, "/img/b.png": b"B", "/skip": b"s"})
    inp = pachinternal.DatumInput(name="in", tree=tree, path="/img", commit="c")
    layout = await lay_out(pachinternal.DatumTask(inputs=[inp]), store, tmp_path / "pfs")
    layout.out_dir.mkdir()
    return layout.out_dir, InputIndex(store, [inp]), tree


async def test_files_dirs_and_links(store: LocalObjectStore, tmp_path: Path) -> None:
    out, index, tree = await _datum(store, tmp_path)
    (out / "sub" / "deep").mkdir(parents=True)
    (out / "sub" / "deep" / "f").write_bytes(b"deep")
    (out / "empty-dir").mkdir()
    (out / "empty-file").write_bytes(b"")
    os.symlink("/pfs/in/img/a.png", out / "abs")
    os.symlink("../../../pfs/in/./img/b.png", out / "sub" / "rel-up")  # as in the sandbox
    os.symlink("sub/deep/f", out / "to-out")
    os.symlink("/pfs/out/abs", out / "chain")
    os.symlink("/pfs/in/img", out / "whole")
    os.symlink(HOST_FILE, out / "host")
    os.mkfifo(out / "pipe")
    done = await upload(store, out.parent, index, host_readable=lambda p: str(p) == HOST_FILE)
    files = await _files(store, done.root.hash)
    assert files == {
        "/abs": b"A" * 100,
        "/chain": b"A" * 100,
        "/empty-file": b"",
        "/host": _host_bytes(),
        "/sub/deep/f": b"deep",
        "/sub/rel-up": b"B",
        "/to-out": b"deep",
        "/whole/a.png": b"A" * 100,
        "/whole/b.png": b"B",
    }
    a_refs = await effective_refs(store, tree, "/img/a.png")
    for path in ("/abs", "/chain", "/whole/a.png"):
        assert await effective_refs(store, done.root.hash, path) == a_refs
    assert done.upload_bytes == len(b"deep") * 2 + len(_host_bytes())


async def test_empty_out_is_the_empty_tree(store: LocalObjectStore, tmp_path: Path) -> None:
    out, index, _ = await _datum(store, tmp_path)
    (out / "nothing").mkdir()
    done = await upload(store, out.parent, index)
    assert done.root.hash == EMPTY_ROOT and done.upload_bytes == 0


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ("/tmp/x", "symlink to /tmp/x"),
        ("/pfs/in/skip", "symlink to /pfs/in/skip"),  # not part of the datum
        ("/pfs/out/loop", "too many levels of symlinks"),
        ("/no/such/file", "symlink to /no/such/file"),
    ],
)
async def test_unreadable_links_fail(
    store: LocalObjectStore, tmp_path: Path, target: str, error: str
) -> None:
    out, index, _ = await _datum(store, tmp_path)
    os.symlink(target, out / "loop")
    with pytest.raises(FailedPrecondition, match=error):
        await upload(store, out.parent, index)


@pytest.mark.parametrize("target", [HOST_FILE, "/etc"])
async def test_links_out_of_pfs_reach_only_what_the_sandbox_reads(
    store: LocalObjectStore, tmp_path: Path, target: str
) -> None:
    """User code must not have the worker (root) read a host file for it:
    without the runner's word (or against it) the link fails the datum."""
    out, index, _ = await _datum(store, tmp_path)
    os.symlink(target, out / "leak")
    with pytest.raises(FailedPrecondition, match="cannot read"):
        await upload(store, out.parent, index)
    with pytest.raises(FailedPrecondition, match="cannot read"):
        await upload(store, out.parent, index, host_readable=lambda p: False)


async def test_an_output_deeper_than_the_recursion_limit(
    store: LocalObjectStore, tmp_path: Path
) -> None:
    out, index, _ = await _datum(store, tmp_path)
    deep = out
    for _ in range(1100):  # (mkdir(parents=True) recurses itself)
        deep = deep / "d"
        deep.mkdir()
    (deep / "f").write_bytes(b"deep")
    try:
        done = await upload(store, out.parent, index)
        assert await _files(store, done.root.hash) == {"/d" * 1100 + "/f": b"deep"}
    finally:  # bottom up: the test's cleanup (rmtree) recurses
        (deep / "f").unlink()
        while deep != out:
            deep.rmdir()
            deep = deep.parent
