"""Commit commands: start-commit, finish-commit, inspect-commit, list-commit,
delete-commit (Pachyderm 1.7's names, flags and output)."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from libs.errors import InvalidArgument
from programs.pachctl import pretty, progress
from programs.pachctl.address import from_env
from programs.pachctl.client import LONG_TIMEOUT_S, Pachd
from programs.pachctl.tabwriter import format_table

_RAW = "disable pretty printing, print raw json"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("start-commit", help="Start a new commit.")
    p.add_argument("repo")
    p.add_argument("branch", nargs="?", default="")
    p.add_argument("-p", "--parent", default="", help="The parent of the new commit.")
    p.add_argument(
        "-m", "--message", "--description", dest="description", default="",
        help="A description of this commit's contents",
    )  # fmt: skip
    p.set_defaults(run=start_commit)

    p = sub.add_parser("finish-commit", help="Finish a started commit.")
    p.add_argument("repo")
    p.add_argument("commit")
    p.add_argument(
        "-m", "--message", "--description", dest="description", default="",
        help="A description of this commit's contents (overwrites any existing description)",
    )  # fmt: skip
    p.set_defaults(run=finish_commit)

    p = sub.add_parser("inspect-commit", help="Return info about a commit.")
    p.add_argument("repo")
    p.add_argument("commit")
    p.add_argument("--raw", action="store_true", help=_RAW)
    p.set_defaults(run=inspect_commit)

    p = sub.add_parser("list-commit", help="Return all commits on a set of repos.")
    p.add_argument("repo")
    p.add_argument("branch", nargs="?", default="")
    p.add_argument(
        "-f", "--from", dest="from_", default="", help="list all commits since this commit"
    )
    p.add_argument(
        "-n", "--number", type=int, default=0,
        help="list only this many commits; if set to zero, list all commits",
    )  # fmt: skip
    p.add_argument("--raw", action="store_true", help=_RAW)
    p.set_defaults(run=list_commit)

    p = sub.add_parser(
        "flush-commit",
        help="Wait for all commits caused by the specified commits to finish and return them.",
    )
    p.add_argument("commits", nargs="+", metavar="repo/commit")
    p.add_argument(
        "-r", "--repos", action="append", default=[],
        help="Wait only for commits leading to a specific set of repos",
    )  # fmt: skip
    p.add_argument("--raw", action="store_true", help=_RAW)
    p.set_defaults(run=flush_commit)

    p = sub.add_parser("subscribe-commit", help="Print commits as they are created (finished).")
    p.add_argument("repo")
    p.add_argument("branch")
    p.add_argument(
        "--from", dest="from_", default="", help="subscribe to all commits since this commit"
    )
    p.add_argument(
        "--new", action="store_true", help="subscribe to only new commits created from now on"
    )
    p.add_argument("--raw", action="store_true", help=_RAW)
    p.set_defaults(run=subscribe_commit)

    p = sub.add_parser("delete-commit", help="Delete an input commit.")
    p.add_argument("repo")
    p.add_argument("commit")
    p.set_defaults(run=delete_commit)


def _api(pachd: Pachd) -> pfs_pb2_grpc.APIStub:
    return pfs_pb2_grpc.APIStub(pachd.channel)


def _commit(repo: str, ref: str) -> pfs.Commit:
    return pfs.Commit(repo=pfs.Repo(name=repo), id=ref)


def start_commit(args: argparse.Namespace, out: TextIO) -> int:
    req = pfs.StartCommitRequest(
        parent=_commit(args.repo, args.parent), branch=args.branch, description=args.description
    )
    with Pachd(from_env()) as pachd:
        commit = pachd.call(_api(pachd).StartCommit, req)
    out.write(f"{commit.id}\n")
    return 0


def finish_commit(args: argparse.Namespace, out: TextIO) -> int:
    req = pfs.FinishCommitRequest(
        commit=_commit(args.repo, args.commit), description=args.description
    )
    # Building the tree of a big commit takes as long as it takes.
    with Pachd(from_env(), timeout=LONG_TIMEOUT_S) as pachd:
        pachd.call(_api(pachd).FinishCommit, req)
    return 0


def detailed(info: pfs.CommitInfo, now: float | None = None) -> str:
    lines = [f"Commit: {info.commit.repo.name}/{info.commit.id}"]
    if info.description:
        lines.append(f"Description: {info.description}")
    if info.HasField("parent_commit"):
        lines.append(f"Parent: {info.parent_commit.id}")
    lines.append(f"Started: {pretty.ago(info.started, now)}")
    if info.HasField("finished"):
        lines.append(f"Finished: {pretty.ago(info.finished, now)} ")
    lines.append(f"Size: {pretty.size(info.size_bytes)}")
    if info.provenance:
        prov = "".join(f" {c.repo.name}/{c.id} " for c in info.provenance)
        lines.append(f"Provenance: {prov} ")
    return "\n".join(lines) + "\n"


def table(infos: list[pfs.CommitInfo], now: float | None = None) -> str:
    rows = ["REPO\tID\tPARENT\tSTARTED\tDURATION\tSIZE\t\n"]
    for i in infos:
        parent = i.parent_commit.id if i.HasField("parent_commit") else "<none>"
        row = f"{i.commit.repo.name}\t{i.commit.id}\t{parent}\t{pretty.ago(i.started, now)}\t"
        if i.HasField("finished"):
            took = (i.finished.ToNanoseconds() - i.started.ToNanoseconds()) / 1e9
            row += f"{pretty.human_duration(took)}\t{pretty.size(i.size_bytes)}\t\n"
        else:
            row += "-\t-\t\n"
        rows.append(row)
    return format_table("".join(rows))


def inspect_commit(args: argparse.Namespace, out: TextIO) -> int:
    req = pfs.InspectCommitRequest(commit=_commit(args.repo, args.commit))
    with Pachd(from_env()) as pachd:
        info = pachd.call(_api(pachd).InspectCommit, req)
    out.write(pretty.raw(info) if args.raw else detailed(info))
    return 0


def list_commit(args: argparse.Namespace, out: TextIO) -> int:
    req = pfs.ListCommitRequest(repo=pfs.Repo(name=args.repo), number=max(args.number, 0))
    if args.branch:
        req.to.CopyFrom(_commit(args.repo, args.branch))
    if args.from_:
        getattr(req, "from").CopyFrom(_commit(args.repo, args.from_))
    with Pachd(from_env()) as pachd:
        infos = list(pachd.call(_api(pachd).ListCommit, req).commit_info)
    out.write(pretty.raw_all(list(infos)) if args.raw else table(infos))
    return 0


def delete_commit(args: argparse.Namespace, out: TextIO) -> int:
    req = pfs.DeleteCommitRequest(commit=_commit(args.repo, args.commit))
    with Pachd(from_env()) as pachd:
        pachd.call(_api(pachd).DeleteCommit, req)
    return 0


def parse_commit(text: str) -> pfs.Commit:
    """``repo/commit`` (the commit may be a branch or an ancestry reference)."""
    repo, sep, ref = text.partition("/")
    if not sep or not repo or not ref:
        raise InvalidArgument(f"invalid commit {text!r}: expected repo/commit")
    return _commit(repo, ref)


def flush_commit(args: argparse.Namespace, out: TextIO) -> int:
    req = pfs.FlushCommitRequest(
        commits=[parse_commit(c) for c in args.commits],
        to_repos=[pfs.Repo(name=r) for r in args.repos],
    )
    # It waits for every downstream commit, pipelines' jobs included: as
    # long as they take (1.7 has no deadline either).
    live = progress.on_terminal()
    if live:
        into = f" in {', '.join(args.repos)}" if args.repos else ""
        progress.waiting(f"the commits downstream of {', '.join(args.commits)}{into}")
    with Pachd(from_env(), timeout=LONG_TIMEOUT_S) as pachd:
        stub = _api(pachd)

        def flush(r: pfs.FlushCommitRequest, timeout: float | None) -> list[pfs.CommitInfo]:
            got = []
            for info in stub.FlushCommit(r, timeout=timeout):  # read the stream inside call()
                got.append(info)
                if live:
                    sys.stderr.write(f"finished {info.commit.repo.name}/{info.commit.id}\n")
            return got

        infos = pachd.call(flush, req)
    out.write(pretty.raw_all(list(infos)) if args.raw else table(infos))
    return 0


def subscribe_commit(args: argparse.Namespace, out: TextIO) -> int:
    """Finished commits of a branch, oldest first, as they come (until
    interrupted). Each row is written as soon as its commit finishes, so
    rows are aligned one at a time."""
    if args.new and args.from_:
        raise InvalidArgument("--new and --from cannot both be provided")
    req = pfs.SubscribeCommitRequest(
        repo=pfs.Repo(name=args.repo), branch=args.branch, state=pfs.FINISHED
    )
    with Pachd(from_env()) as pachd:
        stub = _api(pachd)
        start = args.from_
        if args.new:
            listed = pachd.call(stub.ListBranch, pfs.ListBranchRequest(repo=req.repo))
            start = next(
                (b.head.id for b in listed.branch_info if b.branch.name == args.branch), ""
            )
        if start:
            getattr(req, "from").CopyFrom(_commit(args.repo, start))

        def follow(r: pfs.SubscribeCommitRequest, timeout: float | None) -> int:
            if not args.raw:
                out.write(table([]))
            for info in stub.SubscribeCommit(r):  # no deadline: runs until interrupted
                out.write(pretty.raw(info) if args.raw else table([info]).split("\n", 1)[1])
                out.flush()
            return 0

        return pachd.call(follow, req)
