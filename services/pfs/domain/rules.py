"""Who may call what on pfs while auth is active (the bus guard's rules,
``libs.authz.guard``): READER reads a repo, WRITER also writes it, OWNER
also deletes it (and changes its ACL, in auth); cluster-wide operations are
admin-only. Every request the gateway may forward has a rule: one without
is refused."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from libs.authz.state import ANYONE, OWNER, READER, WRITER, Need, admin, on_repos


def _create_repo(r: Any) -> Need:
    return on_repos(OWNER, r.repo.name) if r.update else ANYONE


def _delete_repo(r: Any) -> Need:
    return admin("delete-repo --all") if r.all else on_repos(OWNER, r.repo.name)


def _both(a: Need, b: Need) -> Need:
    return Need(repos=a.repos + b.repos)


def _create_branch(r: Any) -> Need:
    reads = on_repos(READER, *(b.repo.name for b in r.provenance), r.head.repo.name)
    return _both(on_repos(WRITER, r.branch.repo.name), reads)


def _copy_file(r: Any) -> Need:
    return _both(on_repos(READER, r.src.commit.repo.name), on_repos(WRITER, r.dst.commit.repo.name))


def _diff(r: Any) -> Need:
    q = r.request
    return on_repos(READER, q.new_file.commit.repo.name, q.old_file.commit.repo.name)


def _flush(r: Any) -> Need:
    return on_repos(READER, *(c.repo.name for c in r.commits), *(x.name for x in r.to_repos))


def _sessions(r: Any) -> Need:
    return on_repos(WRITER, *(c.repo.name for c in r.commits))


RULES: dict[str, Callable[[Any], Need]] = {
    "CreateRepo": _create_repo,
    "DeleteRepo": _delete_repo,
    "DeleteAll": lambda _: admin("delete-all"),
    "InspectRepo": lambda r: on_repos(READER, r.repo.name),
    "ListRepo": lambda _: ANYONE,
    "StartCommit": lambda r: on_repos(WRITER, r.parent.repo.name),
    "BuildCommit": lambda r: on_repos(WRITER, r.parent.repo.name),
    "FinishCommit": lambda r: on_repos(WRITER, r.commit.repo.name),
    "DeleteCommit": lambda r: on_repos(WRITER, r.commit.repo.name),
    "InspectCommit": lambda r: on_repos(READER, r.commit.repo.name),
    "ListCommit": lambda r: on_repos(READER, r.repo.name),
    "FlushCommit": _flush,
    "CreateBranch": _create_branch,
    "PropagateBranch": lambda r: on_repos(WRITER, r.branch.repo.name),
    "DeleteBranch": lambda r: on_repos(WRITER, r.branch.repo.name),
    "InspectBranch": lambda r: on_repos(READER, r.branch.repo.name),
    "ListBranch": lambda r: on_repos(READER, r.repo.name),
    "PutFileRefs": lambda r: on_repos(WRITER, r.commit.repo.name),
    "EndPut": lambda r: on_repos(WRITER, r.commit.repo.name),
    "AbandonPut": _sessions,
    "RenewPut": _sessions,
    "DeleteFile": lambda r: on_repos(WRITER, r.file.commit.repo.name),
    "CopyFile": _copy_file,
    "InspectFile": lambda r: on_repos(READER, r.file.commit.repo.name),
    "FileRefs": lambda r: on_repos(READER, r.file.commit.repo.name),
    "ListFilePage": lambda r: on_repos(READER, r.request.file.commit.repo.name),
    "GlobFilePage": lambda r: on_repos(READER, r.request.commit.repo.name),
    "DiffFilePage": _diff,
    "GarbageCollect": lambda _: admin("garbage-collect"),
}
