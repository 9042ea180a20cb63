"""``pachctl get-file``, apart from the other file commands so that it can
start without gRPC: when the gateway's local read socket for
``PACHD_ADDRESS`` is known (``programs/pachctl/localget.py``), one file is
read from it before anything else is loaded; otherwise (``-r``, a glob, no
socket, a refusal) the ``file`` group's get-file runs, which tries the
advertised socket, then the HTTP download, then gRPC
(docs/decisions/0039-get-file-local-socket.md)."""

from __future__ import annotations

import argparse
import os
from typing import TextIO

from libs.errors import InvalidArgument
from programs.pachctl import localget
from programs.pachctl.address import Address, from_env
from programs.pachctl.config import session_token

DEFAULT_PARALLELISM = 10  # putfile's: not imported (it loads gRPC)
# libs.trees.glob's special characters (not imported: it loads dataclasses).
GLOB_SPECIAL = frozenset("*?[{\\")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "get-file",
        help="Return the contents of a file.",
        usage="pachctl get-file repo-name commit-id path/to/file [flags]",
    )
    p.add_argument("repo")
    p.add_argument("commit")
    p.add_argument("path")
    p.add_argument(
        "-r", "--recursive", action="store_true", help="Recursively download a directory."
    )
    p.add_argument("-o", "--output", default="", help="The path where data will be downloaded.")
    p.add_argument(
        "-p", "--parallelism", type=int, default=DEFAULT_PARALLELISM,
        help="The maximum number of files that can be downloaded in parallel",
    )  # fmt: skip
    p.set_defaults(run=get_file)


def get_file(args: argparse.Namespace, out: TextIO) -> int:
    if args.parallelism < 1:
        raise InvalidArgument("--parallelism must be at least 1")
    if (
        not args.recursive
        and localget.enabled(os.environ)
        and not any(c in GLOB_SPECIAL for c in args.path)
        and _from_cached_socket(args, out)
    ):
        return 0
    from programs.pachctl.commands import file  # gRPC from here on

    return file.get_file(args, out)


def _from_cached_socket(args: argparse.Namespace, out: TextIO) -> bool:
    pachd = from_env()
    where = localget.cached(pachd)
    if where is None:
        return False
    try:
        return read_local(
            where, pachd, session_token(), args.repo, args.commit, args.path, args.output, out
        )
    except localget.Mismatch:
        localget.remember(pachd, None)  # stale: the next InspectFile says where it is now
        return False


def read_local(
    where: tuple[str, str],
    pachd: Address,
    token: str,
    repo: str,
    ref: str,
    path: str,
    output: str,
    out: TextIO,
) -> bool:
    """One file from the local read socket ``where`` into ``output`` (a
    path, or "" for ``out``). False, with nothing written, when the socket
    cannot serve it. Once started, a read that ends early is an error and
    leaves ``output`` empty, never half written."""
    if not output:
        binary = getattr(out, "buffer", None)
        out.flush()
        fd = _fileno(binary)
        write = binary.write if binary else lambda b: out.write(bytes(b).decode())
        done = localget.fetch(where, pachd, token, repo, ref, path, fd, write)
        if binary is not None:
            binary.flush()
        return done
    with open(output, "wb") as sink:
        try:
            return localget.fetch(where, pachd, token, repo, ref, path, sink.fileno(), sink.write)
        except BaseException:
            sink.truncate(0)  # no half file left behind
            raise


def _fileno(stream: object) -> int | None:
    try:
        return stream.fileno() if stream is not None else None  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return None
