"""Group commit of whole put-files: many auto-commit puts onto one branch,
each its own commit, made with one append.

A put-file of a few small files onto a branch arrives as one request
(``EndPut`` carrying every write of the stream). When the branch has no
open head, pfs does not need to open a commit, record the writes, seal and
finish it (four appends and two read-model waits, one put after another on
a busy branch): it builds the put's tree on top of the branch's head and
appends ``CommitStarted`` + ``CommitFinished`` + ``BranchSet`` at once. The
commit is never open, so there is nothing for a later call to join and
nothing to expire.

Puts onto one branch that arrive while a batch is being made wait for the
next one; a batch takes them in arrival order (up to ``max_batch``, of one
principal, since an append records one), builds each tree on the one before
(``DeferredWrites``: the trees' objects are written together, and are durable
before the append), and appends every commit of the batch in one message,
which JetStream stores all or nothing. Every caller is answered only after
that append is acknowledged and pfs's read models show it; a failure of the
flush or the append fails every caller of the batch, and a put whose own
tree cannot be built (a file/directory conflict) fails alone.

When the branch's head is open (a start-commit, or a put session of several
requests holding it), the puts go back to the put-session path
(``put_sessions``), which queues them behind it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from google.protobuf.message import Message

from libs import trees
from libs.api.events import pfs_pb2 as ev
from libs.errors import ConcurrencyError, NotFound, PachError
from libs.objects import ObjectStore
from libs.objects.deferred import DeferredWrites
from libs.readmodels import DocumentStore
from services.pfs.adapters.commits_view import COMMITS, commit_key
from services.pfs.app.writer import RepoWriter
from services.pfs.domain import commits, files
from services.pfs.domain.repo import Repo, require

# Write events a whole put may carry (a split needs the parent's piece
# count, a copy the source tree: those go the put-session path).
WHOLE = (ev.FilePut, ev.FileDeleted, ev.HeaderSet, ev.FooterSet)
# A batch that keeps finding its branch moved on gives up after this many
# tries and hands its puts to the put-session path.
ATTEMPTS = 20


def is_whole(writes: Sequence[files.Write]) -> bool:
    return all(isinstance(w, WHOLE) for w in writes)


@dataclass
class _Put:
    writes: Sequence[Message]
    principal: str
    request_id: str
    done: asyncio.Future[str | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def resolve(self, commit_id: str | None) -> None:
        if not self.done.done():
            self.done.set_result(commit_id)

    def fail(self, err: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(err)


@dataclass
class PutBatches:
    writer: RepoWriter
    docs: DocumentStore
    store: ObjectStore
    max_batch: int = 64
    _pending: dict[tuple[str, str], list[_Put]] = field(default_factory=dict)
    _running: dict[tuple[str, str], asyncio.Task[None]] = field(default_factory=dict)
    # the commit each branch's last batch made here, and its tree: (id, tree)
    _roots: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    _answering: set[asyncio.Task[None]] = field(default_factory=set)

    async def put(
        self, repo: str, branch: str, writes: Sequence[Message], principal: str, request_id: str
    ) -> str | None:
        """Make the put's commit on ``branch``; its id, or None when the
        branch's head is open (take the put-session path)."""
        item = _Put(writes, principal, request_id)
        key = (repo, branch)
        self._pending.setdefault(key, []).append(item)
        if key not in self._running:
            self._running[key] = asyncio.create_task(self._drain(key))
        return await item.done

    async def stop(self) -> None:
        tasks = [*self._running.values(), *self._answering]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _drain(self, key: tuple[str, str]) -> None:
        try:
            while pending := self._pending.get(key):
                live = [p for p in pending if not p.done.done()]
                principal = live[0].principal if live else ""
                batch = [p for p in live if p.principal == principal][: self.max_batch]
                taken = {id(p) for p in batch}
                self._pending[key] = [p for p in live if id(p) not in taken]
                if not batch:
                    continue
                try:
                    await self._commit(key[0], key[1], batch)
                except BaseException as err:
                    for p in batch:
                        p.fail(err)
                    if not isinstance(err, Exception):
                        raise
        finally:
            self._running.pop(key, None)
            for p in self._pending.pop(key, []):
                p.fail(asyncio.CancelledError())

    async def _commit(self, repo: str, branch: str, batch: list[_Put]) -> None:
        """Make the batch's commits; its callers are answered by a task of
        their own once the read models show them, while the next batch is
        being made.

        The first attempt decides on the repo's state as this replica last
        saw it (no round trip to the log): the append names that state's
        position, so if anything was appended since (another replica), it
        fails and the batch is built again on the state loaded afresh. A
        decision that would not append (the branch's head is open, a
        refusal) is only taken on fresh state."""
        key = (repo, branch)
        fresh = False
        for _ in range(ATTEMPTS):
            loaded = None if fresh else self.writer.cached(repo)
            if loaded is None:
                loaded, fresh = await self.writer.loaded(repo), True
            state = loaded.state
            try:
                head_id = _free_head(state, repo, branch)
            except PachError:
                if not fresh:
                    fresh = True
                    continue
                raise
            if head_id is None:
                if not fresh:
                    fresh = True
                    continue
                break  # held, or a commit by id: the put-session path
            root = await self._tree(key, head_id)
            deferred = DeferredWrites(self.store)
            made: list[tuple[str, str, int]] = []
            built: list[tuple[_Put, str]] = []
            refused = False
            for p in batch:
                if p.done.done():
                    continue  # its caller is gone: make nothing for it
                try:
                    tree = await trees.build(deferred, root, _ops(p.writes))
                except PachError as err:
                    if not fresh:
                        refused = True  # perhaps only by a stale head: look again
                        break
                    p.fail(err)  # its own error (a conflict): the others go on
                    continue
                commit_id = uuid.uuid4().hex
                made.append((commit_id, tree.hash, tree.size))
                built.append((p, commit_id))
                root = tree.hash
            if refused:
                fresh = True
                continue
            if not made:
                return
            await deferred.flush()  # every tree object durable before the append
            events = commits.put_commits(repo, branch, head_id, made)(state)
            if not events:  # (the head it was built on is the state's own)
                fresh = True
                continue
            try:
                done = await self.writer.append_at(
                    repo,
                    loaded,
                    events,
                    principal=batch[0].principal,
                    correlation_id=batch[0].request_id,
                )
            except ConcurrencyError:
                fresh = True  # the repo moved on: build on what it is now
                continue
            assert done.appended is not None
            self._roots[key] = (made[-1][0], made[-1][1])
            answer = asyncio.create_task(self._answer(built, done.appended.position.seq))
            self._answering.add(answer)
            answer.add_done_callback(self._answering.discard)
            return
        for p in batch:
            p.resolve(None)

    async def _answer(self, built: list[tuple[_Put, str]], seq: int) -> None:
        """Answer the callers of an appended batch once pfs's read models
        show it (read-your-writes); a failure to see it fails them."""
        try:
            await self.writer.wait_for(seq)
        except BaseException as err:
            for p, _ in built:
                p.fail(err)
            raise
        for p, commit_id in built:
            p.resolve(commit_id)

    async def _tree(self, key: tuple[str, str], commit_id: str) -> str | None:
        """The tree of the branch's head ``commit_id``: the one this replica
        made last, or read from the commits view once it shows the head."""
        if not commit_id:
            return None
        made = self._roots.get(key)
        if made is not None and made[0] == commit_id:
            return made[1]
        await self.writer.settled(key[0])
        doc = await self.docs.get(COMMITS, commit_key(key[0], commit_id))
        return (doc or {}).get("tree") or None


def _free_head(state: Repo, repo: str, branch: str) -> str | None:
    """The head a batch builds on ("" for none yet); None when the put
    must take the put-session path (the head is open, or ``branch`` names
    a commit). Raises what the commit would be refused for."""
    require(state, repo)
    found = state.branches.get(branch)
    if found is None and _names_commit(state, repo, branch):
        return None  # a commit by id or ancestry, not a branch
    head = state.commits.get(found.head) if found is not None and found.head else None
    if head is not None and not head.finished:
        return None  # held: the put-session path queues them
    head_id = head.id if head is not None else ""
    commits.put_commits(repo, branch, head_id, [])(state)  # refuses an output branch
    return head_id


def _names_commit(state: Repo, repo: str, ref: str) -> bool:
    try:
        commits.resolve(state, repo, ref)
    except NotFound:
        return False  # a new branch
    return True


async def _ops(writes: Sequence[Message]) -> AsyncIterator[trees.Op]:
    for w in writes:
        for op in files.as_ops(w):
            yield op
