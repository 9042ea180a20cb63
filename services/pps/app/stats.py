"""enable_stats: the `stats` branch of a pipeline's output repo.

Each processed datum's worker stored a stats tree laid out as 1.7 lays it
out under ``/<datum id>`` (``job:<id>``, ``logs``, ``stats``, ``pfs/<input>``,
``pfs/out``, ``failure``). When a job ends, its stats commit is the previous
stats commit's tree with this job's datums' directories put in (copied by
reference: skipped datums keep the entry of the job that processed them),
built as a finished commit on ``<pipeline>@stats`` whose provenance is the
job's output commit."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterable, AsyncIterator

from libs import trees
from libs.errors import AlreadyExists
from libs.objects import ObjectStore
from services.pps.adapters.pfs import Pfs

STATS_BRANCH = "stats"


def stats_commit_id(job_id: str) -> str:
    """The stats commit of a job (deterministic: a retried job end builds it once)."""
    return hashlib.sha256(f"stats\0{job_id}".encode()).hexdigest()[:32]


async def record_stats(
    store: ObjectStore,
    pfs: Pfs,
    *,
    repo: str,
    job_id: str,
    output_commit: str,
    datums: AsyncIterable[tuple[str, str]],
) -> str:
    """Build the job's stats commit from ``datums`` ((datum id, stats tree)
    of the datums this job processed); returns its id."""
    commit_id = stats_commit_id(job_id)
    branch = await pfs.inspect_branch(repo, STATS_BRANCH)
    base: str | None = None
    if branch is not None and branch.head.id:
        if branch.head.id == commit_id:
            return commit_id  # built already (a repeat after a crash)
        base = (await pfs.inspect_commit(repo, branch.head.id)).tree.hash or None

    async def ops() -> AsyncIterator[trees.Op]:
        async for datum_id, tree in datums:
            if tree:
                path = f"/{datum_id}"
                yield trees.Delete(path)
                yield trees.Copy(tree, path, path)

    root = await trees.build(store, base, ops())
    # AlreadyExists: built by an earlier try of this job's end.
    with contextlib.suppress(AlreadyExists):
        await pfs.build_commit(repo, STATS_BRANCH, root.hash, commit_id, [(repo, output_commit)])
    return commit_id
