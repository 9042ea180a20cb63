"""pfs's commits as the API serves them, built from pfs's unary queries (a
bus request cannot block for long or stream):

- ``wait_for_commit`` (``InspectCommit`` with a ``block_state``) asks again,
  backing off, until the commit reaches that state or the caller's deadline
  passes;
- ``flush_commits`` (``FlushCommit``) asks pfs which commits are downstream
  and waits for each to finish the same way;
- ``subscribe_commits`` (``SubscribeCommit``) asks for the branch's commits
  after the last one it yielded, again and again;
- ``list_commits`` (``ListCommitStream``) pages through ``ListCommit`` along
  the ancestry (each page starts at the parent of the last commit yielded);
- ``refuse_finished`` fails an upload to a finished commit before its body
  is read.

Waits back off as ``services.gateway.app.polling`` says."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from libs.api.pfs import pfs_pb2 as pfs
from libs.errors import FailedPrecondition, InvalidArgument, NotFound
from services.gateway.app import polling
from services.gateway.principal import Ask

# Commits per ListCommit request behind ListCommitStream.
LIST_PAGE = 256


async def _inspect(ask: Ask, commit: pfs.Commit) -> pfs.CommitInfo:
    req = pfs.InspectCommitRequest(commit=commit)
    return await ask("InspectCommit", req, pfs.CommitInfo, "qry")


async def reached(ask: Ask, info: pfs.CommitInfo, state: int) -> bool:
    """Whether the commit ``info`` describes is in ``state`` (STARTED,
    FINISHED, or READY: every provenance commit has finished) or past it."""
    if state == pfs.STARTED or info.HasField("finished"):
        return True
    if state == pfs.FINISHED:
        return False
    # READY: every provenance commit has finished.
    for commit in info.provenance:
        if not (await _inspect(ask, commit)).HasField("finished"):
            return False
    return True


async def wait_for_commit(ask: Ask, request: pfs.InspectCommitRequest) -> pfs.CommitInfo:
    """``InspectCommit``: the commit once it reaches ``block_state``."""
    info = await _inspect(ask, request.commit)
    if request.block_state == pfs.STARTED:
        return info
    # Follow the commit itself, not the branch it was named by.
    pinned = pfs.Commit(repo=request.commit.repo, id=info.commit.id)
    delay = polling.FIRST_POLL
    while not await reached(ask, info, request.block_state):
        await asyncio.sleep(delay)
        delay = polling.next_poll(delay)
        info = await _inspect(ask, pinned)
    return info


async def flush_commits(ask: Ask, request: pfs.FlushCommitRequest) -> AsyncIterator[pfs.CommitInfo]:
    """Each commit downstream of the given ones, once it has finished."""
    found = await ask("FlushCommit", request, pfs.CommitInfos, "qry")
    for info in found.commit_info:
        delay = polling.FIRST_POLL
        while not info.HasField("finished"):
            await asyncio.sleep(delay)
            delay = polling.next_poll(delay)
            try:
                info = await _inspect(ask, info.commit)
            except NotFound:
                continue  # about to be opened by the downstream reaction
        yield info


async def subscribe_commits(
    ask: Ask, request: pfs.SubscribeCommitRequest
) -> AsyncIterator[pfs.CommitInfo]:
    """The commits of a branch, oldest first, each once it reaches
    ``state``, then every later one as it comes, until the caller stops."""
    repo = pfs.InspectRepoRequest(repo=request.repo)
    await ask("InspectRepo", repo, pfs.RepoInfo, "qry")
    last = getattr(request, "from").id
    delay = polling.FIRST_POLL
    while True:
        page = pfs.ListCommitRequest(
            repo=request.repo, to=pfs.Commit(repo=request.repo, id=request.branch)
        )
        if last:
            getattr(page, "from").CopyFrom(pfs.Commit(repo=request.repo, id=last))
        try:
            found = await ask("ListCommit", page, pfs.CommitInfos, "qry")
            infos = list(found.commit_info)
        except NotFound:
            infos = []  # no such branch, or no head yet
        for info in reversed(infos):
            if not await reached(ask, info, request.state):
                break
            yield info
            last = info.commit.id
            delay = polling.FIRST_POLL
        await asyncio.sleep(delay)
        delay = polling.next_poll(delay)


async def list_commits(ask: Ask, request: pfs.ListCommitRequest) -> AsyncIterator[pfs.CommitInfo]:
    """``ListCommit``'s commits, newest first, a page of ``LIST_PAGE`` per
    request along the ancestry of ``request.to``; without ``to``, the one
    page pfs answers (it has no cursor for a whole-repo listing)."""
    page = pfs.ListCommitRequest()
    page.CopyFrom(request)
    remaining = request.number or None
    while True:
        size = LIST_PAGE if remaining is None else min(LIST_PAGE, remaining)
        if request.to.id:
            page.number = size
        infos = (await ask("ListCommit", page, pfs.CommitInfos, "qry")).commit_info
        for info in infos:
            yield info
        if remaining is not None:
            remaining -= len(infos)
        last = infos[-1] if infos else None
        if (
            not request.to.id  # one page: pfs has no cursor for a whole-repo listing
            or len(infos) < size
            or remaining == 0
            or last is None
            or not last.HasField("parent_commit")
        ):
            return
        page.to.CopyFrom(pfs.Commit(repo=request.repo, id=last.parent_commit.id))


async def refuse_finished(ask: Ask, commit: pfs.Commit) -> None:
    """Fail before reading an upload's body when ``commit`` names a finished
    commit (a branch takes a new commit; an unknown name becomes a new
    branch)."""
    branch = pfs.InspectBranchRequest(branch=pfs.Branch(repo=commit.repo, name=commit.id))
    try:
        await ask("InspectBranch", branch, pfs.BranchInfo, "qry")
        return
    except (NotFound, InvalidArgument):
        pass  # not a branch (or not a branch name: a commit id, master^...)
    try:
        info = await ask(
            "InspectCommit", pfs.InspectCommitRequest(commit=commit), pfs.CommitInfo, "qry"
        )
    except NotFound:
        return
    if info.HasField("finished"):
        name = f"{commit.repo.name}/{info.commit.id}"
        raise FailedPrecondition(
            f"cannot write to commit {name}: it has already been finished",
            repo=commit.repo.name,
            commit=info.commit.id,
        )
