"""Branch commands and queries: CreateBranch (also set-branch), DeleteBranch,
InspectBranch, ListBranch."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.empty_pb2 import Empty

from libs.api.pfs import pfs_pb2 as pfs
from libs.bus import Bus, Context
from libs.errors import InvalidArgument, NotFound
from libs.readmodels import DocumentStore
from services.pfs.adapters.branches_view import BRANCHES, EDGES, branch_info, branch_key
from services.pfs.app.lookup import repo_name, require_repo
from services.pfs.app.writer import RepoWriter
from services.pfs.domain import branches
from services.pfs.domain.repo import Key


@dataclass
class Branches:
    writer: RepoWriter
    docs: DocumentStore

    async def register(self, bus: Bus) -> None:
        await bus.serve("CreateBranch", pfs.CreateBranchRequest, self.create_branch)
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
        upstream: dict[Key, list[Key]] = {}
        for key in provenance:
            if key[0] != name:
                doc = await self.docs.get(BRANCHES, branch_key(*key))
                if doc is not None:
                    upstream[key] = [(r, b) for r, b in doc["provenance"]]
        decide = branches.create_branch(name, branch, req.head.id, provenance, upstream)
        await self.writer.run(name, decide, ctx)
        return Empty()

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
        docs = self.docs.query(BRANCHES, where={"repo": name})
        return pfs.BranchInfos(branch_info=[branch_info(doc) async for doc in docs])
