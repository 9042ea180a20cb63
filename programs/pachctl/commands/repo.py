"""Repo commands: create-repo, update-repo, inspect-repo, list-repo,
delete-repo (Pachyderm 1.7's names, flags and output)."""

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


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("create-repo", help="Create a new repo.")
    p.add_argument("repo")
    p.add_argument("-d", "--description", default="", help="A description of the repo.")
    p.set_defaults(run=create_repo)

    p = sub.add_parser("update-repo", help="Update a repo.")
    p.add_argument("repo")
    p.add_argument("-d", "--description", default="", help="A description of the repo.")
    p.set_defaults(run=update_repo)

    p = sub.add_parser("inspect-repo", help="Return info about a repo.")
    p.add_argument("repo")
    p.add_argument("--raw", action="store_true", help="disable pretty printing, print raw json")
    p.set_defaults(run=inspect_repo)

    p = sub.add_parser("list-repo", help="Return all repos.")
    p.add_argument("--raw", action="store_true", help="disable pretty printing, print raw json")
    p.set_defaults(run=list_repo)

    p = sub.add_parser("delete-repo", help="Delete a repo.")
    p.add_argument("repo", nargs="?")
    p.add_argument(
        "-f",
        "--force",
        action="store_true",
        help="remove the repo regardless of errors; use with care",
    )
    p.add_argument("--all", action="store_true", help="remove all repos")
    p.set_defaults(run=delete_repo)


def _api(pachd: Pachd) -> pfs_pb2_grpc.APIStub:
    return pfs_pb2_grpc.APIStub(pachd.channel)


def create_repo(args: argparse.Namespace, out: TextIO) -> int:
    req = pfs.CreateRepoRequest(repo=pfs.Repo(name=args.repo), description=args.description)
    with Pachd(from_env()) as pachd:
        pachd.call(_api(pachd).CreateRepo, req)
    return 0


def update_repo(args: argparse.Namespace, out: TextIO) -> int:
    req = pfs.CreateRepoRequest(
        repo=pfs.Repo(name=args.repo), description=args.description, update=True
    )
    with Pachd(from_env()) as pachd:
        pachd.call(_api(pachd).CreateRepo, req)
    return 0


def detailed(info: pfs.RepoInfo, now: float | None = None) -> str:
    lines = [f"Name: {info.repo.name}"]
    if info.description:
        lines.append(f"Description: {info.description}")
    lines.append(f"Created: {pretty.ago(info.created, now)}")
    lines.append(f"Size: {pretty.size(info.size_bytes)}")
    return "\n".join(lines) + "\n"


def table(infos: list[pfs.RepoInfo], now: float | None = None) -> str:
    text = "NAME\tCREATED\tSIZE\t\n" + "".join(
        f"{i.repo.name}\t{pretty.ago(i.created, now)}\t{pretty.size(i.size_bytes)}\t\n"
        for i in infos
    )
    return format_table(text)


def inspect_repo(args: argparse.Namespace, out: TextIO) -> int:
    with Pachd(from_env()) as pachd:
        info = pachd.call(
            _api(pachd).InspectRepo, pfs.InspectRepoRequest(repo=pfs.Repo(name=args.repo))
        )
    out.write(pretty.raw(info) if args.raw else detailed(info))
    return 0


def list_repo(args: argparse.Namespace, out: TextIO) -> int:
    with Pachd(from_env()) as pachd:
        infos = list(pachd.call(_api(pachd).ListRepo, pfs.ListRepoRequest()).repo_info)
    out.write(pretty.raw_all(list(infos)) if args.raw else table(infos))
    return 0


def delete_repo(args: argparse.Namespace, out: TextIO) -> int:
    if args.repo and args.all:
        raise InvalidArgument("cannot use the --all flag with an argument")
    if not args.repo and not args.all:
        raise InvalidArgument("either a repo name or the --all flag needs to be provided")
    req = pfs.DeleteRepoRequest(repo=pfs.Repo(name=args.repo or ""), force=args.force, all=args.all)
    with Pachd(from_env()) as pachd:
        pachd.call(_api(pachd).DeleteRepo, req)
    return 0
