"""File commands: put-file, get-file, list-file, inspect-file (Pachyderm
1.7's names, flags and output). Contents stream in blocks; no file is ever
read into memory whole."""

from __future__ import annotations

import argparse
import os
import posixpath
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, TextIO

from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from libs.errors import InvalidArgument
from libs.pachctl import pretty
from libs.pachctl.address import from_env
from libs.pachctl.client import Pachd
from libs.pachctl.tabwriter import format_table

# The gateway takes messages up to 1 MiB; blocks stay well under it.
BLOCK = 512 * 1024
# Streams of big files run as long as they need to.
STREAM_TIMEOUT_S = 24 * 3600.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("put-file", help="Put a file into the filesystem.")
    p.add_argument("repo")
    p.add_argument("branch")
    p.add_argument("path", nargs="?", default="")
    p.add_argument(
        "-f",
        "--file",
        action="append",
        dest="files",
        help="The file to be put (a local path, or - for stdin); repeatable.",
    )
    p.add_argument(
        "-i",
        "--input-file",
        default="",
        help="Read filepaths from a file (- for stdin), one per line.",
    )
    p.add_argument(
        "-r",
        "--recursive",
        action="store_true",
        help="Recursively put the files in a directory.",
    )
    p.add_argument(
        "-o",
        "--overwrite",
        action="store_true",
        help="Overwrite the existing content of the file instead of appending to it.",
    )
    p.add_argument(
        "-p", "--parallelism", type=int, default=10, help="(accepted; files stream in order)"
    )
    p.set_defaults(run=put_file)

    p = sub.add_parser("get-file", help="Return the contents of a file.")
    p.add_argument("repo")
    p.add_argument("commit")
    p.add_argument("path")
    p.add_argument("-o", "--output", default="", help="The path where data will be downloaded.")
    p.set_defaults(run=get_file)

    p = sub.add_parser("inspect-file", help="Return info about a file.")
    p.add_argument("repo")
    p.add_argument("commit")
    p.add_argument("path")
    p.add_argument("--raw", action="store_true", help="disable pretty printing, print raw json")
    p.set_defaults(run=inspect_file)

    p = sub.add_parser("delete-file", help="Delete a file (or a whole directory).")
    p.add_argument("repo")
    p.add_argument("commit")
    p.add_argument("path")
    p.set_defaults(run=delete_file)

    p = sub.add_parser("glob-file", help="Return files that match a glob pattern in a commit.")
    p.add_argument("repo")
    p.add_argument("commit")
    p.add_argument("pattern")
    p.add_argument("--raw", action="store_true", help="disable pretty printing, print raw json")
    p.set_defaults(run=glob_file)

    p = sub.add_parser("list-file", help="Return the files in a directory.")
    p.add_argument("repo")
    p.add_argument("commit")
    p.add_argument("path", nargs="?", default="/")
    p.add_argument("--raw", action="store_true", help="disable pretty printing, print raw json")
    p.set_defaults(run=list_file)


def _api(pachd: Pachd) -> pfs_pb2_grpc.APIStub:
    return pfs_pb2_grpc.APIStub(pachd.channel)


def _file(repo: str, commit: str, path: str) -> pfs.File:
    return pfs.File(commit=pfs.Commit(repo=pfs.Repo(name=repo), id=commit), path=path)


# --- put-file ----------------------------------------------------------------


def _sources(args: argparse.Namespace) -> list[str]:
    sources = list(args.files or [])
    if args.input_file:
        listing = sys.stdin if args.input_file == "-" else open(args.input_file)  # noqa: SIM115
        with listing:
            sources.extend(line.strip() for line in listing if line.strip())
    return sources or ["-"]


def _targets(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    """(local source, path in the repo) for every file to put, as 1.7 names them."""
    sources = _sources(args)
    for source in sources:
        if "://" in source:
            raise InvalidArgument(f"put-file from a URL ({source}) is not supported yet")
        if source == "-":
            if not args.path:
                raise InvalidArgument("a path in the repo is required when reading from stdin")
            yield source, args.path
            continue
        local = Path(source)
        if local.is_dir():
            if not args.recursive:
                raise InvalidArgument(f"{source} is a directory: use -r to put it recursively")
            for root, dirs, files in os.walk(local):
                dirs.sort()
                for name in sorted(files):
                    full = Path(root) / name
                    rel = full.relative_to(local).as_posix()
                    yield str(full), posixpath.join(args.path or source, rel)
            continue
        if not local.exists():
            raise InvalidArgument(f"{source}: no such file")
        if len(sources) > 1:
            yield source, posixpath.join(args.path, source) if args.path else source
        else:
            yield source, args.path or source


def _blocks(stream: BinaryIO) -> Iterator[bytes]:
    while block := stream.read(BLOCK):
        yield block


def _requests(args: argparse.Namespace) -> Iterator[pfs.PutFileRequest]:
    for source, dest in _targets(args):
        first = pfs.PutFileRequest(file=_file(args.repo, args.branch, dest))
        if args.overwrite:
            first.overwrite_index.index = 0
        with sys.stdin.buffer if source == "-" else open(source, "rb") as stream:
            blocks = _blocks(stream)
            first.value = next(blocks, b"")
            yield first
            for block in blocks:
                yield pfs.PutFileRequest(value=block)


def put_file(args: argparse.Namespace, out: TextIO) -> int:
    deque(_targets(args), maxlen=0)  # check every source before sending anything
    with Pachd(from_env(), timeout=STREAM_TIMEOUT_S) as pachd:
        pachd.call(_api(pachd).PutFile, _requests(args))
    return 0


# --- reading -----------------------------------------------------------------


def get_file(args: argparse.Namespace, out: TextIO) -> int:
    req = pfs.GetFileRequest(file=_file(args.repo, args.commit, args.path))
    with Pachd(from_env(), timeout=STREAM_TIMEOUT_S) as pachd:
        replies = pachd.call(_api(pachd).GetFile, req)
        if args.output:
            with open(args.output, "wb") as sink:
                pachd.drain(replies, sink.write)
        else:
            binary = getattr(out, "buffer", None)
            pachd.drain(replies, binary.write if binary else lambda b: out.write(b.decode()))
    return 0


def detailed(info: pfs.FileInfo) -> str:
    kind = "file" if info.file_type == pfs.FILE else "dir"
    children = "".join(f" {c} " for c in info.children)
    return (
        f"Path: {info.file.path}\nType: {kind}\nSize: {pretty.size(info.size_bytes)}\n"
        f"Children: {children}\n"
    )


def table(infos: list[pfs.FileInfo]) -> str:
    text = "NAME\tTYPE\tSIZE\t\n" + "".join(
        f"{i.file.path}\t{'file' if i.file_type == pfs.FILE else 'dir'}\t"
        f"{pretty.size(i.size_bytes)}\t\n"
        for i in infos
    )
    return format_table(text)


def inspect_file(args: argparse.Namespace, out: TextIO) -> int:
    req = pfs.InspectFileRequest(file=_file(args.repo, args.commit, args.path))
    with Pachd(from_env()) as pachd:
        info = pachd.call(_api(pachd).InspectFile, req)
    out.write(pretty.raw(info) if args.raw else detailed(info))
    return 0


def list_file(args: argparse.Namespace, out: TextIO) -> int:
    req = pfs.ListFileRequest(file=_file(args.repo, args.commit, args.path))
    with Pachd(from_env()) as pachd:
        infos = list(pachd.call(_api(pachd).ListFile, req).file_info)
    out.write(pretty.raw_all(list(infos)) if args.raw else table(infos))
    return 0


def glob_file(args: argparse.Namespace, out: TextIO) -> int:
    req = pfs.GlobFileRequest(
        commit=pfs.Commit(repo=pfs.Repo(name=args.repo), id=args.commit), pattern=args.pattern
    )
    with Pachd(from_env()) as pachd:
        infos = list(pachd.call(_api(pachd).GlobFile, req).file_info)
    out.write(pretty.raw_all(list(infos)) if args.raw else table(infos))
    return 0


def delete_file(args: argparse.Namespace, out: TextIO) -> int:
    req = pfs.DeleteFileRequest(file=_file(args.repo, args.commit, args.path))
    with Pachd(from_env()) as pachd:
        pachd.call(_api(pachd).DeleteFile, req)
    return 0
