"""Repo commands and queries: CreateRepo (and update), InspectRepo, ListRepo,
DeleteRepo, DeleteAll (every repo, with its branches and commits). Commands
append to the repo's aggregate and return once the ``repos`` read model
shows the change (read-your-writes)."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.empty_pb2 import Empty

from libs.api.pfs import pfs_pb2 as pfs
from libs.bus import Bus, Context
from libs.errors import InvalidArgument, NotFound
from libs.readmodels import DocumentStore
from services.pfs.adapters.branches_view import BRANCHES, EDGES
from services.pfs.adapters.repos_view import REPOS, repo_info
from services.pfs.app.lookup import repo_name
from services.pfs.app.writer import RepoWriter
from services.pfs.domain import repo


@dataclass
class Repos:
    writer: RepoWriter
    docs: DocumentStore

    async def register(self, bus: Bus) -> None:
        await bus.serve("CreateRepo", pfs.CreateRepoRequest, self.create_repo)
        await bus.serve("DeleteRepo", pfs.DeleteRepoRequest, self.delete_repo)
        await bus.serve("DeleteAll", Empty, self.delete_all)
        await bus.serve("InspectRepo", pfs.InspectRepoRequest, self.inspect_repo, kind="qry")
        await bus.serve("ListRepo", pfs.ListRepoRequest, self.list_repo, kind="qry")

    async def create_repo(self, req: pfs.CreateRepoRequest, ctx: Context) -> Empty:
        name = repo_name(req.repo)
        await self.writer.run(name, repo.create_repo(name, req.description, req.update), ctx)
        return Empty()

    async def delete_repo(self, req: pfs.DeleteRepoRequest, ctx: Context) -> Empty:
        if req.all:
            if req.repo.name:
                raise InvalidArgument("cannot delete one repo and all repos at once")
            names = [doc["name"] async for doc in self.docs.query(REPOS)]
        else:
            names = [repo_name(req.repo)]
        for name in names:
            dependents = await self._dependents(name, set(names))
            await self.writer.run(name, repo.delete_repo(name, req.force, dependents), ctx)
        return Empty()

    async def delete_all(self, req: Empty, ctx: Context) -> Empty:
        """Pachyderm 1.7's DeleteAll on pfs: every repo goes, forced."""
        return await self.delete_repo(pfs.DeleteRepoRequest(all=True, force=True), ctx)

    async def _dependents(self, name: str, going: set[str]) -> list[repo.Key]:
        """Branches of other repos (not being deleted with it) whose
        provenance includes repo ``name``."""
        found = {
            (edge["repo"], edge["branch"])
            async for edge in self.docs.query(EDGES, where={"up_repo": name})
            if edge["repo"] not in going
        }
        return sorted(found)

    async def inspect_repo(self, req: pfs.InspectRepoRequest, ctx: Context) -> pfs.RepoInfo:
        name = repo_name(req.repo)
        doc = await self.docs.get(REPOS, name)
        if doc is None:
            raise NotFound(f"repo {name} not found", repo=name)
        info = repo_info(doc)
        branches = self.docs.query(
            BRANCHES, where={"repo": name}, order_by="created_ns", descending=True
        )
        async for branch in branches:
            info.branches.append(pfs.Branch(repo=info.repo, name=branch["name"]))
        return info

    async def list_repo(self, req: pfs.ListRepoRequest, ctx: Context) -> pfs.ListRepoResponse:
        # Newest first, as Pachyderm lists them.
        docs = self.docs.query(REPOS, order_by="created_ns", descending=True)
        return pfs.ListRepoResponse(repo_info=[repo_info(doc) async for doc in docs])
