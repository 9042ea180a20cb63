"""Branch commands and queries: CreateBranch (also set-branch), DeleteBranch,
InspectBranch, ListBranch, and the internal PropagateBranch.

Creating a branch, or changing its provenance or head, propagates at once
(Pachyderm 1.7's createBranch -> propagateCommit): the branch and every
branch downstream of it get an open commit over the current heads of their
provenance, unless that would repeat their head's provenance. A head that is
an open input commit holds this back: the downstream reaction propagates it
when it finishes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from google.protobuf.empty_pb2 import Empty

from libs.api.internal import pfs_branches_pb2 as internal
from libs.api.pfs import pfs_pb2 as pfs
from libs.bus import Bus, Context
from libs.errors import FailedPrecondition, InvalidArgument, NotFound
from libs.readmodels import DocumentStore
from services.pfs.adapters.branches_view import BRANCHES, EDGES, branch_info, branch_key
from services.pfs.adapters.commits_view import COMMITS, commit_key
from services.pfs.app.lookup import repo_name, require_repo
from services.pfs.app.writer import RepoWriter
from services.pfs.domain import branches, commits
from services.pfs.domain.repo import Key

_COMMIT_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class Branches:
    writer: RepoWriter
    docs: DocumentStore

    async def register(self, bus: Bus) -> None:
        await bus.serve("CreateBranch", pfs.CreateBranchRequest, self.create_branch)
        await bus.serve("PropagateBranch", internal.PropagateBranchRequest, self.propagate_branch)
        await bus.serve("DeleteBranch", pfs.DeleteBranchRequest, self.delete_branch)
        await bus.serve("InspectBranch", pfs.InspectBranchRequest, self.inspect_branch, kind="qry")
        await bus.serve("ListBranch", pfs.ListBranchRequest, self.list_branch, kind="qry")

    async def create_branch(self, req: pfs.CreateBranchRequest, ctx: Context) -> Empty:
        if req.HasField("branch"):
            name, branch = repo_name(req.branch.repo), req.branch.name
        else:
            name, branch = repo_name(req.head.repo), req.s_branch
        if req.head.id and req.head.repo.name != name:
            raise InvalidArgument(
                f"the head of branch {name}/{branch} must be a commit of repo {name}"
            )
        provenance: list[Key] = [(repo_name(p.repo), p.name) for p in req.provenance]
        upstream = await self._upstream(name, provenance)
        missing = [k for k in provenance if k[0] != name and k not in upstream]
        for key in missing:
            await require_repo(self.docs, key[0])
            upstream[key] = []  # created below, headless (Pachyderm 1.7)
        decide = branches.create_branch(name, branch, req.head.id, provenance, upstream)
        if (await self.writer.run(name, decide, ctx)).events:
            await self._refresh_downstream(name, branch, ctx)
        for repo, missing_branch in missing:
            await self.writer.run(repo, branches.ensure_branch(repo, missing_branch), ctx)
        # Always, so that a retry after a crash still opens what is missing
        # (the commit ids are deterministic and a repeat is a no-op).
        await self._propagate(name, branch, ctx)
        return Empty()

    async def propagate_branch(self, req: internal.PropagateBranchRequest, ctx: Context) -> Empty:
        name, branch = repo_name(req.branch.repo), req.branch.name
        if not _COMMIT_ID.match(req.commit_id):
            raise InvalidArgument(
                f"commit id {req.commit_id!r} is invalid: 32 lowercase hex characters expected",
                commit=req.commit_id,
            )
        doc = await self.docs.get(BRANCHES, branch_key(name, branch))
        if doc is None:
            raise NotFound(f"branch {name}/{branch} not found", repo=name, branch=branch)
        if not doc["provenance"]:
            raise FailedPrecondition(
                f"branch {name}/{branch} has no provenance: nothing to propagate",
                repo=name,
                branch=branch,
            )
        await self._propagate(name, branch, ctx, again=req.commit_id)
        return Empty()

    async def _propagate(self, repo: str, branch: str, ctx: Context, again: str = "") -> None:
        """Open a commit on ``repo``/``branch`` and each branch downstream of
        it whose provenance heads changed, upstream branches first so that a
        downstream commit has the new upstream commits in its provenance.

        ``again`` (PropagateBranch): open commit ``again`` on ``repo``/
        ``branch`` even though its provenance repeats its head's, and on every
        branch downstream of it a commit over it (id
        ``downstream_id(again, ...)``, as the downstream reaction names the
        commits an upstream commit opens), so that the whole chain below an
        updated pipeline runs on its new output. Nothing downstream opens
        when ``again`` could not be opened (an input head still open: the
        reaction propagates when it finishes)."""
        edges = self.docs.query(EDGES, where={"up_key": branch_key(repo, branch)})
        targets = {(e["repo"], e["branch"]) async for e in edges} | {(repo, branch)}
        found = [await self.docs.get(BRANCHES, branch_key(*t)) for t in sorted(targets)]
        ordered = sorted(
            (d for d in found if d is not None and d["provenance"]),
            key=lambda d: (len(d["provenance"]), d["repo"], d["name"]),
        )
        opened: dict[Key, str] = {}
        for doc in ordered:
            provenance = await self._heads(doc, opened)
            if not provenance:
                continue
            target: Key = (doc["repo"], doc["name"])
            root = target == (repo, branch)
            if not again:
                cid = commits.propagated_id(*target, doc["head"], provenance)
            elif root:
                cid = again
            elif (repo, branch) in opened:
                cid = commits.downstream_id(again, *target)
            else:
                return  # ``again`` was not opened: nothing below it either
            decide = commits.start_commit(
                target[0], cid, target[1], provenance=provenance, again=bool(again) and root
            )
            try:
                done = await self.writer.run(target[0], decide, ctx)
            except NotFound:
                continue  # gone meanwhile
            if cid in done.state.commits:
                opened[target] = cid

    async def _heads(self, doc: dict[str, Any], opened: dict[Key, str]) -> list[Key]:
        """The provenance of a commit opened now on branch ``doc``: the heads
        of its provenance branches (empty when it must wait for an open
        input commit to finish, or there are none)."""
        provenance: list[Key] = []
        for r, b in doc["provenance"]:
            if (r, b) in opened:
                provenance.append((r, opened[(r, b)]))
                continue
            up = await self.docs.get(BRANCHES, branch_key(r, b))
            if up is None or not up["head"]:
                continue
            if not up["provenance"]:
                head = await self.docs.get(COMMITS, commit_key(r, up["head"]))
                if head is not None and not head["finished_ns"]:
                    return []  # the reaction opens it when this input finishes
            provenance.append((r, up["head"]))
        return provenance

    async def _upstream(self, repo: str, provenance: list[Key]) -> dict[Key, list[Key]]:
        """The transitive provenance of the given branches of other repos."""
        upstream: dict[Key, list[Key]] = {}
        for key in provenance:
            if key[0] != repo:
                doc = await self.docs.get(BRANCHES, branch_key(*key))
                if doc is not None:
                    upstream[key] = [(r, b) for r, b in doc["provenance"]]
        return upstream

    async def _refresh_downstream(self, repo: str, branch: str, ctx: Context) -> None:
        """Branches downstream of one whose provenance changed recompute their
        transitive provenance, until nothing changes (each pass fixes at
        least one more level of the graph)."""
        edges = self.docs.query(EDGES, where={"up_key": branch_key(repo, branch)})
        downstream = sorted({(e["repo"], e["branch"]) async for e in edges})
        for _ in range(len(downstream) + 1):
            changed = False
            for down_repo, down_branch in downstream:
                doc = await self.docs.get(BRANCHES, branch_key(down_repo, down_branch))
                if doc is None:
                    continue
                direct: list[Key] = [(r, b) for r, b in doc["direct"]]
                decide = branches.create_branch(
                    down_repo,
                    down_branch,
                    provenance=direct,
                    upstream=await self._upstream(down_repo, direct),
                )
                try:
                    done = await self.writer.run(down_repo, decide, ctx)
                except NotFound:
                    continue  # an upstream branch went meanwhile
                changed = changed or bool(done.events)
            if not changed:
                return

    async def delete_branch(self, req: pfs.DeleteBranchRequest, ctx: Context) -> Empty:
        name, branch = repo_name(req.branch.repo), req.branch.name
        edges = self.docs.query(EDGES, where={"up_key": branch_key(name, branch)})
        subvenance = sorted({(e["repo"], e["branch"]) async for e in edges})
        decide = branches.delete_branch(name, branch, req.force, subvenance)
        await self.writer.run(name, decide, ctx)
        return Empty()

    async def inspect_branch(self, req: pfs.InspectBranchRequest, ctx: Context) -> pfs.BranchInfo:
        name, branch = repo_name(req.branch.repo), req.branch.name
        await require_repo(self.docs, name)
        doc = await self.docs.get(BRANCHES, branch_key(name, branch))
        if doc is None:
            raise NotFound(f"branch {name}/{branch} not found", repo=name, branch=branch)
        info = branch_info(doc)
        edges = self.docs.query(EDGES, where={"up_key": branch_key(name, branch)})
        info.subvenance.extend(
            [pfs.Branch(repo=pfs.Repo(name=e["repo"]), name=e["branch"]) async for e in edges]
        )
        return info

    async def list_branch(self, req: pfs.ListBranchRequest, ctx: Context) -> pfs.BranchInfos:
        name = repo_name(req.repo)
        await require_repo(self.docs, name)
        # Newest branch first, as Pachyderm lists them.
        docs = self.docs.query(
            BRANCHES, where={"repo": name}, order_by="created_ns", descending=True
        )
        return pfs.BranchInfos(branch_info=[branch_info(doc) async for doc in docs])
