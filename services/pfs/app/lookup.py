"""Reading commits and branches from pfs's read models: resolve a commit
reference (branch, id, ``^``/``~`` ancestry) the way the domain does."""

from __future__ import annotations

from typing import Any

from libs.api.pfs import pfs_pb2 as pfs
from libs.errors import InvalidArgument, NotFound
from libs.readmodels import DocumentStore
from services.pfs.adapters.branches_view import BRANCHES, branch_key
from services.pfs.adapters.commits_view import COMMITS, commit_key
from services.pfs.adapters.repos_view import REPOS
from services.pfs.domain import ancestry
from services.pfs.domain.names import validate_repo_name


def repo_name(r: pfs.Repo) -> str:
    if not r.name:
        raise InvalidArgument("a repo name is required")
    return validate_repo_name(r.name)


async def require_repo(docs: DocumentStore, name: str) -> None:
    if await docs.get(REPOS, name) is None:
        raise NotFound(f"repo {name} not found", repo=name)


async def commit_doc(docs: DocumentStore, repo: str, reference: str) -> dict[str, Any]:
    """The commit document a reference names (NotFound when none)."""
    if not reference:
        raise InvalidArgument("a commit id or branch name is required", repo=repo)
    await require_repo(docs, repo)
    base, back = ancestry.parse(reference)
    branch = await docs.get(BRANCHES, branch_key(repo, base))
    if branch is not None:
        if not branch["head"]:
            raise NotFound(f"branch {repo}/{base} has no head", repo=repo, branch=base)
        start = branch["head"]
    else:
        start = base
    doc = await docs.get(COMMITS, commit_key(repo, start))
    if doc is None:
        raise NotFound(f"commit {repo}/{reference} not found", repo=repo, ref=reference)
    for step in range(back):
        if not doc["parent"]:
            raise ancestry.past_root(repo, reference, doc["id"], step, back)
        parent = await docs.get(COMMITS, commit_key(repo, doc["parent"]))
        if parent is None:
            raise NotFound(f"commit {repo}/{doc['parent']} not found", repo=repo)
        doc = parent
    return doc
