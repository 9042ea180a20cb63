"""``services.gateway.app.ingest.put_files`` over a real LocalObjectStore, with pfs
played by a small in-memory fake of its bus commands (this module's only
collaborator): batching, split and header writes, cleanup of failed and
cancelled streams, and memory that does not grow with files or bytes."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message

from libs.api.internal import pfs_files_pb2 as internal
from libs.api.pfs import pfs_pb2 as pfs
from libs.errors import FailedPrecondition, InvalidArgument, NotFound
from libs.objects import LocalObjectStore, chunk_key
from services.gateway.app import ingest as files

MiB = 1 << 20
REPO = pfs.Repo(name="data")


class FakePfs:
    """The pfs commands put_files sends, answered from memory. ``master``
    has a finished head unless ``open_head`` is set; ``calls`` records
    (name, summary) in order; writes are counted, not kept, unless
    ``keep`` is set; refs are checked to exist unless ``keep`` is off."""

    def __init__(self, store: LocalObjectStore, open_head: bool = False, keep: bool = True):
        self.store = store
        self.open_head = open_head
        self.keep = keep
        self.calls: list[tuple[str, Any]] = []
        self.writes: list[internal.FileWrite] = []
        self.write_count = 0
        self.start_gate: asyncio.Event | None = None
        self.fail_finish = False
        self.started = 0

    async def __call__(
        self, name: str, request: Message, response_type: type[Any], kind: str
    ) -> Any:
        if name == "InspectBranch":
            head = "head" if self.open_head else "done"
            return pfs.BranchInfo(head=pfs.Commit(repo=REPO, id=head))
        if name == "InspectCommit":
            assert isinstance(request, pfs.InspectCommitRequest)
            info = pfs.CommitInfo(commit=pfs.Commit(repo=REPO, id=request.commit.id))
            if request.commit.id == "done":
                info.finished.GetCurrentTime()
            return info
        if name == "StartCommit":
            if self.start_gate is not None:
                await self.start_gate.wait()
            self.started += 1
            self.calls.append((name, f"new{self.started}"))
            return pfs.Commit(repo=REPO, id=f"new{self.started}")
        if name == "PutFileRefs":
            assert isinstance(request, internal.PutFileRefsRequest)
            for write in request.writes if self.keep else ():
                for ref in write.refs:  # every ref is durable when pfs hears of it
                    assert await self.store.exists(chunk_key(ref.chunk)), write.path
            self.write_count += len(request.writes)
            if self.keep:
                self.writes.extend(request.writes)
            self.calls.append((name, len(request.writes)))
            return Empty()
        if name == "FinishCommit":
            assert isinstance(request, pfs.FinishCommitRequest)
            self.calls.append((name, request.commit.id))
            if self.fail_finish:
                raise FailedPrecondition("file/directory conflict")
            return Empty()
        if name in ("DeleteCommit", "DeleteFile"):
            target = request.commit.id if name == "DeleteCommit" else request.file.path  # type: ignore[attr-defined]
            self.calls.append((name, target))
            return Empty()
        raise NotFound(name)

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "objects", durable=False)


def msg(path: str, ref: str = "master", **fields: Any) -> pfs.PutFileRequest:
    return pfs.PutFileRequest(
        file=pfs.File(commit=pfs.Commit(repo=REPO, id=ref), path=path), **fields
    )


async def stream(msgs: Iterable[pfs.PutFileRequest]) -> AsyncIterator[pfs.PutFileRequest]:
    for m in msgs:
        yield m


async def test_writes_go_in_batches_after_their_refs_are_durable(store: LocalObjectStore) -> None:
    fake = FakePfs(store)
    n = 2 * files.BATCH + 500
    await files.put_files(store, fake, stream(msg(f"/f{i}", value=b"x" * i) for i in range(n)))
    assert fake.calls == [
        ("StartCommit", "new1"),
        ("PutFileRefs", files.BATCH),
        ("PutFileRefs", files.BATCH),
        ("PutFileRefs", 500),
        ("FinishCommit", "new1"),
    ]
    assert [w.path for w in fake.writes] == [f"/f{i}" for i in range(n)]
    assert all(w.append for w in fake.writes)


async def test_split_header_and_overwrite_writes_in_order(store: LocalObjectStore) -> None:
    fake = FakePfs(store, open_head=True)
    over = pfs.OverwriteIndex(index=0)
    await files.put_files(
        store,
        fake,
        stream(
            [
                msg("/a", value=b"a"),
                msg("/d", delimiter=pfs.LINE, overwrite_index=over, value=b"1\n2\n"),
                pfs.PutFileRequest(value=b"3"),
                msg("/d", delimiter=pfs.LINE, header=pfs.Metadata(value=b"h\n")),
                msg("/d", footer=pfs.Metadata()),
            ]
        ),
    )
    # the write before the overwrite is sent before the directory is deleted
    assert fake.calls == [
        ("PutFileRefs", 1),
        ("DeleteFile", "/d"),
        ("PutFileRefs", 5),
    ]
    kinds = [(w.path, w.kind, w.split, w.append) for w in fake.writes]
    assert kinds == [
        ("/a", internal.CONTENT, False, True),
        ("/d", internal.CONTENT, True, False),
        ("/d", internal.CONTENT, True, False),
        ("/d", internal.CONTENT, True, False),
        ("/d", internal.HEADER, False, False),
        ("/d", internal.FOOTER, False, False),
    ]
    assert [sum(r.length for r in w.refs) for w in fake.writes] == [1, 2, 2, 1, 2, 0]


async def test_sql_split_sends_pieces_then_header_and_footer(store: LocalObjectStore) -> None:
    fake = FakePfs(store, open_head=True)
    dump = b"SET x;\nCOPY t (a) FROM stdin;\n1\n2\n\\.\n-- done\n"
    await files.put_files(store, fake, stream([msg("/s", delimiter=pfs.SQL, value=dump)]))
    assert [(w.kind, w.split) for w in fake.writes] == [
        (internal.CONTENT, True),
        (internal.CONTENT, True),
        (internal.HEADER, False),
        (internal.FOOTER, False),
    ]
    sizes = [sum(r.length for r in w.refs) for w in fake.writes]
    assert sizes == [2, 2, len(b"SET x;\nCOPY t (a) FROM stdin;\n"), len(b"\\.\n-- done\n")]


async def test_a_failed_stream_deletes_the_commit_it_started(store: LocalObjectStore) -> None:
    fake = FakePfs(store)
    with pytest.raises(InvalidArgument, match="--recursive needs a url"):
        await files.put_files(
            store, fake, stream([msg("/a", value=b"a"), msg("/b", recursive=True)])
        )
    assert fake.calls == [("StartCommit", "new1"), ("DeleteCommit", "new1")]


async def test_a_failed_stream_leaves_an_open_commit_open(store: LocalObjectStore) -> None:
    fake = FakePfs(store, open_head=True)
    msgs = [msg(f"/f{i}", value=b"x") for i in range(files.BATCH + 1)] + [msg("/")]
    with pytest.raises(InvalidArgument, match="root directory"):
        await files.put_files(store, fake, stream(msgs))
    assert fake.calls == [("PutFileRefs", files.BATCH)]  # the unsent last file is dropped


async def test_a_failed_finish_deletes_the_commit(store: LocalObjectStore) -> None:
    fake = FakePfs(store)
    fake.fail_finish = True
    with pytest.raises(FailedPrecondition):
        await files.put_files(store, fake, stream([msg("/a", value=b"a")]))
    assert fake.names() == ["StartCommit", "PutFileRefs", "FinishCommit", "DeleteCommit"]


async def test_cancelled_while_starting_the_commit_still_deletes_it(
    store: LocalObjectStore,
) -> None:
    fake = FakePfs(store)
    fake.start_gate = asyncio.Event()
    task = asyncio.ensure_future(files.put_files(store, fake, stream([msg("/a", value=b"a")])))
    await asyncio.sleep(0.05)  # StartCommit is in flight
    task.cancel()
    await asyncio.sleep(0.05)
    fake.start_gate.set()  # pfs opens the commit after the caller gave up
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):
        if "DeleteCommit" in fake.names():
            break
        await asyncio.sleep(0.01)
    assert fake.calls == [("StartCommit", "new1"), ("DeleteCommit", "new1")]


async def test_memory_does_not_grow_with_files(store: LocalObjectStore) -> None:
    fake = FakePfs(store, open_head=True, keep=False)

    async def many(n: int) -> AsyncIterator[pfs.PutFileRequest]:
        for i in range(n):
            yield msg(f"/dir/file-{i:06d}", value=b"%06d\n" % i)

    gc.collect()
    tracemalloc.start()
    try:
        await files.put_files(store, fake, many(3 * files.BATCH))
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        await files.put_files(store, fake, many(10 * files.BATCH))
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert fake.write_count == 13 * files.BATCH
    assert peak < 12 * MiB, f"peak {peak / MiB:.1f} MiB for 10,000 files"


async def test_split_of_a_big_stream_does_not_buffer_it(store: LocalObjectStore) -> None:
    fake = FakePfs(store, open_head=True, keep=False)
    line = b"y" * 1023 + b"\n"
    block = line * 1024  # 1 MiB

    async def big() -> AsyncIterator[pfs.PutFileRequest]:
        yield msg("/split", delimiter=pfs.LINE, target_file_bytes=16 * MiB)
        for _ in range(160):
            yield pfs.PutFileRequest(value=block)

    gc.collect()
    tracemalloc.start()
    try:
        await files.put_files(store, fake, big())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert fake.write_count == 10  # 160 MiB in pieces of 16 MiB
    assert peak < 48 * MiB, f"peak {peak / MiB:.1f} MiB for a 160 MiB split"
