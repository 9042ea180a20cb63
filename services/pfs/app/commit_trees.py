"""Which tree a commit reads from: a finished commit its own, an open one its
parent's (its writes are not in a tree until finish-commit)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from libs import trees
from libs.api.pfs import pfs_pb2 as pfs
from libs.readmodels import DocumentStore
from services.pfs.adapters.commits_view import COMMITS, commit_key
from services.pfs.app.lookup import commit_doc, repo_name


@dataclass(frozen=True)
class CommitTree:
    commit: pfs.Commit  # by id
    doc: dict[str, Any]
    root: str  # never empty: an empty commit reads trees.EMPTY_ROOT

    @property
    def finished(self) -> bool:
        return bool(self.doc["finished_ns"])


async def parent_root(docs: DocumentStore, repo: str, doc: dict[str, Any]) -> str | None:
    """The tree of a commit's parent (None: no parent, or an empty one)."""
    if not doc["parent"]:
        return None
    parent = await docs.get(COMMITS, commit_key(repo, doc["parent"]))
    return (parent or {}).get("tree") or None


async def commit_tree(docs: DocumentStore, commit: pfs.Commit) -> CommitTree:
    """The tree to read for ``commit`` (named by id, branch or ancestry)."""
    name = repo_name(commit.repo)
    doc = await commit_doc(docs, name, commit.id)
    root = doc["tree"] if doc["finished_ns"] else await parent_root(docs, name, doc)
    by_id = pfs.Commit(repo=pfs.Repo(name=name), id=doc["id"])
    return CommitTree(by_id, doc, root or trees.EMPTY_ROOT)


async def parent_tree(docs: DocumentStore, of: CommitTree) -> CommitTree | None:
    """The tree of ``of``'s parent commit; None when it has none."""
    if not of.doc["parent"]:
        return None
    return await commit_tree(docs, pfs.Commit(repo=of.commit.repo, id=of.doc["parent"]))
