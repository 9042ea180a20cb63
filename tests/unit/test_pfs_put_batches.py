"""PutBatches (pfs's group commit of whole put-files) with a stand-in for
the repo writer (the append and its read-model wait) and a real local
object store: which puts share an append, when each caller is answered,
and what a failure does to them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import pytest
from google.protobuf.message import Message

from libs import trees
from libs.api.events import pfs_pb2 as ev
from libs.errors import ConcurrencyError, FailedPrecondition, Unavailable
from libs.events import Loaded
from libs.events.envelope import Position
from libs.objects import LocalObjectStore
from libs.readmodels import DocumentStore
from services.pfs.app.put_batches import PutBatches
from services.pfs.app.writer import RepoWriter
from services.pfs.domain import files, repo


class Writer:
    """The repo aggregate in memory; ``gate`` holds every append until set,
    ``fail_call`` makes that append fail. ``cached`` is what this replica
    saw last (``stale`` makes it an older state than the log's)."""

    def __init__(self) -> None:
        self.state = repo.evolve(repo.Repo(), ev.RepoCreated(name="data"))
        self.seq = 1
        self.appends: list[Sequence[Message]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_call = 0  # this call of append_at fails (0: none)
        self.calls = 0
        self.loads = 0  # round trips to the log
        self.stale: Loaded[repo.Repo] | None = None
        self.started = asyncio.Event()
        self.shown = asyncio.Event()  # the read models show every append
        self.shown.set()

    def now(self) -> Loaded[repo.Repo]:
        return Loaded(self.state, Position(self.seq, self.seq))

    def cached(self, name: str) -> Loaded[repo.Repo] | None:
        return self.stale or self.now()

    async def loaded(self, name: str) -> Loaded[repo.Repo]:
        self.loads += 1
        self.stale = None
        return self.now()

    async def settled(self, name: str) -> repo.Repo:
        return self.state

    async def wait_for(self, seq: int) -> None:
        await self.shown.wait()

    def land(self, events: Sequence[Message]) -> None:
        """An append (this replica's or another's)."""
        for e in events:
            self.state = repo.evolve(self.state, e)
        self.appends.append(events)
        self.seq += 1

    async def append_at(
        self, name: str, loaded: Loaded[repo.Repo], events: Sequence[Message], **kw: Any
    ) -> Any:
        self.started.set()
        await self.gate.wait()
        self.calls += 1
        if self.calls == self.fail_call:
            raise Unavailable("event store unavailable")
        if loaded.position.seq != self.seq:
            self.stale = None
            raise ConcurrencyError("ev.pfs.repo.data", loaded.position.seq)
        self.land(events)
        appended = type("Appended", (), {"position": Position(self.seq, self.seq)})
        return type("Done", (), {"events": events, "state": self.state, "appended": appended})()


class Docs:
    """The commits view: each finished commit's tree."""

    def __init__(self, writer: Writer) -> None:
        self.writer = writer
        self.trees: dict[str, str] = {}

    async def get(self, collection: str, key: str) -> dict[str, Any] | None:
        for batch in self.writer.appends:
            for e in batch:
                if isinstance(e, ev.CommitFinished):
                    self.trees[e.id] = e.tree
        commit_id = key.rsplit("/", 1)[-1].rsplit("@", 1)[-1]
        tree = next((t for c, t in self.trees.items() if key.endswith(c)), None)
        return {"id": commit_id, "tree": tree} if tree else None


@pytest.fixture
def writer() -> Writer:
    return Writer()


@pytest.fixture
def batches(writer: Writer, tmp_path: Path) -> PutBatches:
    store = LocalObjectStore(tmp_path / "objects")
    return PutBatches(cast(RepoWriter, writer), cast(DocumentStore, Docs(writer)), store)


def put(path: str, data: bytes = b"x") -> list[Message]:
    return [files.put(path, [trees.DataRef("c" * 64, 0, len(data))], append=False)]


async def _until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for ``cond`` (a loaded machine may run the batch late)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def commits_of(events: Sequence[Message]) -> list[str]:
    return [e.id for e in events if isinstance(e, ev.CommitStarted)]


async def test_puts_arriving_during_a_batch_share_the_next_append(
    batches: PutBatches, writer: Writer
) -> None:
    writer.gate.clear()
    first = asyncio.ensure_future(batches.put("data", "master", put("/a"), "", ""))
    await writer.started.wait()  # the first batch is appending: the rest queue
    rest = [
        asyncio.ensure_future(batches.put("data", "master", put(f"/f{i}"), "", ""))
        for i in range(10)
    ]
    await asyncio.sleep(0.05)
    assert not first.done() and not any(r.done() for r in rest)  # none acked before the append
    writer.gate.set()
    ids = [await first, *[await r for r in rest]]
    assert len(set(ids)) == 11 and all(ids)
    assert [len(commits_of(a)) for a in writer.appends] == [1, 10]
    # one line of commits in arrival order, each on the one before
    chain = [c for a in writer.appends for c in commits_of(a)]
    assert chain == ids
    parents = [writer.state.commits[c].parent for c in chain]
    assert parents == ["", *chain[:-1]]
    assert writer.state.branches["master"].head == chain[-1]


async def test_a_failed_append_fails_every_caller_of_its_batch_and_only_them(
    batches: PutBatches, writer: Writer
) -> None:
    writer.gate.clear()
    first = asyncio.ensure_future(batches.put("data", "master", put("/a"), "", ""))
    await writer.started.wait()
    doomed = [
        asyncio.ensure_future(batches.put("data", "master", put(f"/d{i}"), "", ""))
        for i in range(5)
    ]
    await asyncio.sleep(0.01)
    writer.fail_call = 2  # the second append: the batch of the five
    writer.gate.set()
    await first
    for d in doomed:
        with pytest.raises(Unavailable):
            await d
    assert len(writer.appends) == 1  # nothing of the failed batch landed
    later = await batches.put("data", "master", put("/later"), "", "")
    assert writer.state.branches["master"].head == later
    assert len(writer.appends) == 2


async def test_a_put_whose_tree_conflicts_fails_alone(batches: PutBatches, writer: Writer) -> None:
    await batches.put("data", "master", put("/a"), "", "")
    writer.gate.clear()
    writer.started.clear()
    blocker = asyncio.ensure_future(batches.put("data", "master", put("/b"), "", ""))
    await writer.started.wait()
    ok = asyncio.ensure_future(batches.put("data", "master", put("/c"), "", ""))
    bad = asyncio.ensure_future(batches.put("data", "master", put("/a/under-a-file"), "", ""))
    ok2 = asyncio.ensure_future(batches.put("data", "master", put("/d"), "", ""))
    writer.gate.set()
    await blocker
    assert await ok and await ok2
    with pytest.raises(FailedPrecondition, match="file/directory conflict"):
        await bad
    assert len(commits_of(writer.appends[-1])) == 2


async def test_puts_of_other_principals_wait_for_their_own_batch(
    batches: PutBatches, writer: Writer
) -> None:
    writer.gate.clear()
    first = asyncio.ensure_future(batches.put("data", "master", put("/a"), "alice", ""))
    await writer.started.wait()
    mixed = [
        asyncio.ensure_future(batches.put("data", "master", put(f"/m{i}"), who, ""))
        for i, who in enumerate(["alice", "bob", "alice", "bob"])
    ]
    writer.gate.set()
    await first
    await asyncio.gather(*mixed)
    assert [len(commits_of(a)) for a in writer.appends] == [1, 2, 2]


async def test_an_open_head_sends_the_puts_to_the_session_path(
    batches: PutBatches, writer: Writer
) -> None:
    started = ev.CommitStarted(id="a" * 32, branch="master")
    writer.state = repo.evolve(writer.state, started)
    writer.state = repo.evolve(writer.state, ev.BranchSet(name="master", head="a" * 32))
    assert await batches.put("data", "master", put("/x"), "", "") is None
    assert writer.appends == []


async def test_callers_are_answered_only_once_the_read_models_show_their_commits(
    batches: PutBatches, writer: Writer
) -> None:
    writer.shown.clear()
    first = asyncio.ensure_future(batches.put("data", "master", put("/a"), "", ""))
    await _until(lambda: len(writer.appends) == 1)
    await asyncio.sleep(0.05)
    assert len(writer.appends) == 1 and not first.done()  # appended, not yet shown
    # the next batch is made meanwhile, on the first one's tree
    second = asyncio.ensure_future(batches.put("data", "master", put("/b"), "", ""))
    await _until(lambda: len(writer.appends) == 2)
    await asyncio.sleep(0.05)
    assert len(writer.appends) == 2 and not second.done()
    writer.shown.set()
    a, b = await first, await second
    assert a is not None and b is not None
    assert writer.state.commits[b].parent == a


async def test_a_batch_decides_on_the_replicas_state_without_a_round_trip(
    batches: PutBatches, writer: Writer
) -> None:
    for i in range(3):
        assert await batches.put("data", "master", put(f"/{i}"), "", "")
    assert writer.loads == 0 and len(writer.appends) == 3


async def test_a_batch_on_a_stale_state_is_built_again_on_the_logs(
    batches: PutBatches, writer: Writer
) -> None:
    mine = await batches.put("data", "master", put("/a"), "", "")
    writer.stale = writer.now()
    # another replica's commit lands on the branch meanwhile
    theirs = "b" * 32
    writer.land(
        [
            ev.CommitStarted(id=theirs, branch="master", parent=mine or ""),
            ev.CommitFinished(id=theirs, tree=""),
            ev.BranchSet(name="master", head=theirs),
        ]
    )
    again = await batches.put("data", "master", put("/c"), "", "")
    assert again is not None and writer.loads == 1
    assert writer.state.commits[again].parent == theirs  # built on the log's head
    assert writer.state.branches["master"].head == again
