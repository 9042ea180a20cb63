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
    has a finished head unless ``open_head`` is set (then writes go into the
    caller's open commit ``head``; else pfs opens ``new1`` for the session,
    held on a lease of ``lease_ms``); ``calls`` records (name, summary) in
    order; writes are counted, not kept, unless ``keep`` is set; refs are
    checked to exist unless ``keep`` is off. ``queued`` answers that many
    requests with "queued" first."""

    def __init__(self, store: LocalObjectStore, open_head: bool = False, keep: bool = True):
        self.store = store
        self.open_head = open_head
        self.keep = keep
        self.calls: list[tuple[str, Any]] = []
        self.writes: list[internal.FileWrite] = []
        self.write_count = 0
        self.gate: asyncio.Event | None = None
        self.fail_end = False
        self.queued = 0
        self.lease_ms = 60_000
        self.sessions: set[str] = set()

    async def __call__(
        self, name: str, request: Message, response_type: type[Any], kind: str
    ) -> Any:
        if name in ("PutFileRefs", "EndPut"):
            assert isinstance(request, internal.PutFileRefsRequest)
            assert response_type is internal.PutFileRefsResponse
            self.sessions.add(request.session)
            if self.gate is not None:
                await self.gate.wait()
            if self.queued:
                self.queued -= 1
                self.calls.append(("queued", len(request.writes)))
                return internal.PutFileRefsResponse(queued=True)
            for write in request.writes if self.keep else ():
                for ref in write.refs:  # every ref is durable when pfs hears of it
                    assert await self.store.exists(chunk_key(ref.chunk)), write.path
            self.write_count += len(request.writes)
            if self.keep:
                self.writes.extend(request.writes)
            self.calls.append((name, len(request.writes)))
            if name == "EndPut" and self.fail_end:
                raise FailedPrecondition("file/directory conflict")
            commit = "head" if self.open_head else "new1"
            lease = 0 if self.open_head or name == "EndPut" else self.lease_ms
            return internal.PutFileRefsResponse(
                commit=pfs.Commit(repo=REPO, id=commit), lease_ms=lease
            )
        if name == "AbandonPut":
            assert isinstance(request, internal.AbandonPutRequest)
            self.sessions.add(request.session)
            self.calls.append((name, [c.id for c in request.commits]))
            return Empty()
        if name == "RenewPut":
            assert isinstance(request, internal.RenewPutRequest)
            self.calls.append((name, [c.id for c in request.commits]))
            return Empty()
        if name == "DeleteFile":
            self.calls.append((name, request.file.path))  # type: ignore[attr-defined]
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
    # the last batch ends the session: pfs finishes the commit it opened
    assert fake.calls == [
        ("PutFileRefs", files.BATCH),
        ("PutFileRefs", files.BATCH),
        ("EndPut", 500),
    ]
    assert len(fake.sessions) == 1
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
        ("EndPut", 5),
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


async def test_a_failed_stream_abandons_its_session(store: LocalObjectStore) -> None:
    fake = FakePfs(store)
    with pytest.raises(InvalidArgument, match="--recursive needs a url"):
        await files.put_files(
            store, fake, stream([msg("/a", value=b"a"), msg("/b", recursive=True)])
        )
    # nothing was sent yet: the branch is named, pfs deletes what the session holds there
    assert fake.calls == [("AbandonPut", ["master"])]


async def test_a_failed_stream_abandons_the_commit_pfs_opened(store: LocalObjectStore) -> None:
    fake = FakePfs(store)
    msgs = [msg(f"/f{i}", value=b"x") for i in range(files.BATCH + 1)] + [msg("/")]
    with pytest.raises(InvalidArgument, match="root directory"):
        await files.put_files(store, fake, stream(msgs))
    assert fake.calls == [("PutFileRefs", files.BATCH), ("AbandonPut", ["new1"])]


async def test_a_failed_stream_leaves_an_open_commit_open(store: LocalObjectStore) -> None:
    fake = FakePfs(store, open_head=True)
    msgs = [msg(f"/f{i}", value=b"x") for i in range(files.BATCH + 1)] + [msg("/")]
    with pytest.raises(InvalidArgument, match="root directory"):
        await files.put_files(store, fake, stream(msgs))
    # the unsent last file is dropped; pfs keeps a caller's commit open
    assert fake.calls == [("PutFileRefs", files.BATCH), ("AbandonPut", ["head"])]


async def test_a_failed_end_abandons_the_session(store: LocalObjectStore) -> None:
    fake = FakePfs(store)
    fake.fail_end = True
    with pytest.raises(FailedPrecondition):
        await files.put_files(store, fake, stream([msg("/a", value=b"a")]))
    assert fake.calls == [("EndPut", 1), ("AbandonPut", ["master"])]


async def test_a_queued_request_is_sent_again_until_pfs_takes_it(
    store: LocalObjectStore,
) -> None:
    fake = FakePfs(store)
    fake.queued = 3
    await files.put_files(store, fake, stream([msg("/a", value=b"a")]))
    assert fake.calls == [("queued", 1)] * 3 + [("EndPut", 1)]
    assert [w.path for w in fake.writes] == ["/a"]


async def test_the_session_renews_its_lease_while_the_stream_lives(
    store: LocalObjectStore,
) -> None:
    fake = FakePfs(store)
    fake.lease_ms = 90  # renewed every 30 ms

    async def slow() -> AsyncIterator[pfs.PutFileRequest]:
        for i in range(files.BATCH + 1):
            yield msg(f"/f{i}", value=b"x")
        # alive until five renewals (the full batch goes to pfs in the
        # background, so on a loaded machine its lease may start late)
        for _ in range(500):
            if fake.names().count("RenewPut") >= 5:
                break
            await asyncio.sleep(0.02)

    await files.put_files(store, fake, slow())
    names = fake.names()
    assert names[0] == "PutFileRefs" and names[-1] == "EndPut"
    assert names.count("RenewPut") >= 5, names
    assert ("RenewPut", ["new1"]) in fake.calls
    calls = len(fake.calls)
    await asyncio.sleep(0.2)
    assert len(fake.calls) == calls  # no renewal after the end


async def test_cancelled_while_pfs_opens_the_commit_still_abandons_it(
    store: LocalObjectStore,
) -> None:
    fake = FakePfs(store)
    fake.gate = asyncio.Event()
    task = asyncio.ensure_future(files.put_files(store, fake, stream([msg("/a", value=b"a")])))
    await asyncio.sleep(0.05)  # EndPut is in flight
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):
        if "AbandonPut" in fake.names():
            break
        await asyncio.sleep(0.01)
    # the branch is named: pfs deletes whatever the session holds on it
    assert fake.calls == [("AbandonPut", ["master"])]
    assert len(fake.sessions) == 1
    fake.gate.set()


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
