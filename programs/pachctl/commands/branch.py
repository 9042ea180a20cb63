"""Branch commands: create-branch, list-branch, inspect-branch, set-branch,
delete-branch (Pachyderm 1.7's names, flags and output)."""

from __future__ import annotations

import argparse
from typing import TextIO

from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from libs.errors import InvalidArgument
from programs.pachctl import pretty
from programs.pachctl.address import from_env
from programs.pachctl.client import Pachd
from programs.pachctl.tabwriter import format_table

_RAW = "disable pretty printing, print raw json"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "create-branch", help="Create a new branch, or update an existing branch, on a repo."
    )
    p.add_argument("repo")
    p.add_argument("branch")
    p.add_argument(
        "-p", "--provenance", action="append", default=[], metavar="REPO/BRANCH",
        help="The provenance for the branch.",
    )  # fmt: skip
    p.add_argument("--head", default="", help="The head of the newly created branch.")
    p.set_defaults(run=create_branch)

    p = sub.add_parser("list-branch", help="Return all branches on a repo.")
    p.add_argument("repo")
    p.add_argument("--raw", action="store_true", help=_RAW)
    p.set_defaults(run=list_branch)

    p = sub.add_parser("inspect-branch", help="Return info about a branch.")
    p.add_argument("repo")
    p.add_argument("branch")
    p.add_argument("--raw", action="store_true", help=_RAW)
    p.set_defaults(run=inspect_branch)

    p = sub.add_parser("set-branch", help="Set a commit and its ancestors to a branch.")
    p.add_argument("repo")
    p.add_argument("commit")
    p.add_argument("branch")
    p.set_defaults(run=set_branch)

    p = sub.add_parser("delete-branch", help="Delete a branch")
    p.add_argument("repo")
    p.add_argument("branch")
    p.add_argument(
        "-f", "--force", action="store_true",
        help="remove the branch regardless of errors; use with care",
    )  # fmt: skip
    p.set_defaults(run=delete_branch)


def _api(pachd: Pachd) -> pfs_pb2_grpc.APIStub:
    return pfs_pb2_grpc.APIStub(pachd.channel)


def _branch(repo: str, name: str) -> pfs.Branch:
    return pfs.Branch(repo=pfs.Repo(name=repo), name=name)


def parse_branch(text: str) -> pfs.Branch:
    """``repo/branch`` as given to ``--provenance``."""
    repo, sep, name = text.partition("/")
    if not sep or not repo or not name or "/" in name:
        raise InvalidArgument(f"invalid branch {text!r}: expected repo/branch")
    return _branch(repo, name)


def create_branch(args: argparse.Namespace, out: TextIO) -> int:
    req = pfs.CreateBranchRequest(
        branch=_branch(args.repo, args.branch),
        provenance=[parse_branch(p) for p in args.provenance],
    )
    if args.head:
        req.head.CopyFrom(pfs.Commit(repo=pfs.Repo(name=args.repo), id=args.head))
    with Pachd(from_env()) as pachd:
        pachd.call(_api(pachd).CreateBranch, req)
    return 0


def set_branch(args: argparse.Namespace, out: TextIO) -> int:
    req = pfs.CreateBranchRequest(
        branch=_branch(args.repo, args.branch),
        head=pfs.Commit(repo=pfs.Repo(name=args.repo), id=args.commit),
    )
    with Pachd(from_env()) as pachd:
        pachd.call(_api(pachd).CreateBranch, req)
    return 0


def table(infos: list[pfs.BranchInfo]) -> str:
    rows = "".join(
        f"{i.branch.name}\t{i.head.id if i.HasField('head') else '-'}\t\n" for i in infos
    )
    return format_table("BRANCH\tHEAD\t\n" + rows)


def detailed(info: pfs.BranchInfo) -> str:
    lines = [f"Name: {info.branch.repo.name}/{info.branch.name}"]
    lines.append(f"Head Commit: {info.head.id if info.HasField('head') else '-'}")
    for title, branches in (
        ("Provenance", info.provenance),
        ("Subvenance", info.subvenance),
    ):
        if branches:
            lines.append(f"{title}: " + ", ".join(f"{b.repo.name}/{b.name}" for b in branches))
    return "\n".join(lines) + "\n"


def list_branch(args: argparse.Namespace, out: TextIO) -> int:
    req = pfs.ListBranchRequest(repo=pfs.Repo(name=args.repo))
    with Pachd(from_env()) as pachd:
        infos = list(pachd.call(_api(pachd).ListBranch, req).branch_info)
    out.write(pretty.raw_all(list(infos)) if args.raw else table(infos))
    return 0


def inspect_branch(args: argparse.Namespace, out: TextIO) -> int:
    req = pfs.InspectBranchRequest(branch=_branch(args.repo, args.branch))
    with Pachd(from_env()) as pachd:
        info = pachd.call(_api(pachd).InspectBranch, req)
    out.write(pretty.raw(info) if args.raw else detailed(info))
    return 0


def delete_branch(args: argparse.Namespace, out: TextIO) -> int:
    req = pfs.DeleteBranchRequest(branch=_branch(args.repo, args.branch), force=args.force)
    with Pachd(from_env()) as pachd:
        pachd.call(_api(pachd).DeleteBranch, req)
    return 0
