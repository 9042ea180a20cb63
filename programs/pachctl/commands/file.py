"""File commands (Pachyderm 1.7's names, flags and output): put-file,
put-header and put-footer (in ``putfile``), copy-file, get-file (one file,
or ``-r`` a whole directory), inspect-file, list-file, glob-file, diff-file
and delete-file.

Contents stream in blocks and listings stream row by row (``ListFileStream``
and ``GlobFileStream``, printed in blocks of 50 lines as 1.7's tabwriter
does), so neither a file nor a listing is ever held in memory whole."""

from __future__ import annotations

import argparse
import os
import posixpath
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TextIO

import grpc

from libs import bytes_value
from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from libs.errors import InvalidArgument, PachError
from programs.pachctl import fastget, localget, pretty, progress
from programs.pachctl.address import from_env
from programs.pachctl.client import DEFAULT_TIMEOUT_S, Pachd, ServerError
from programs.pachctl.commands import putfile
from programs.pachctl.commands.putfile import STREAM_TIMEOUT_S
from programs.pachctl.tabwriter import StreamingTable

_RAW = "disable pretty printing, print raw json"
FILE_HEADER = "NAME\tTYPE\tSIZE\t\n"
# libs.trees.glob's special characters (not imported: it loads dataclasses).
GLOB_SPECIAL = frozenset("*?[{\\")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    putfile.register(sub)

    p = sub.add_parser(
        "copy-file",
        help="Copy files between pfs paths.",
        usage="pachctl copy-file src-repo src-commit src-path dst-repo dst-commit dst-path [flags]",
    )
    for name in ("src_repo", "src_commit", "src_path", "dst_repo", "dst_commit", "dst_path"):
        p.add_argument(name, metavar=name.replace("_", "-"))
    p.add_argument(
        "-o", "--overwrite", action="store_true",
        help="Overwrite the existing content of the file, either from previous commits or "
        "previous calls to put-file within this commit.",
    )  # fmt: skip
    p.set_defaults(run=copy_file)

    p = sub.add_parser(
        "inspect-file",
        help="Return info about a file.",
        usage="pachctl inspect-file repo-name commit-id path/to/file [flags]",
    )
    p.add_argument("repo")
    p.add_argument("commit")
    p.add_argument("path")
    p.add_argument("--raw", action="store_true", help=_RAW)
    p.set_defaults(run=inspect_file)

    p = sub.add_parser(
        "list-file",
        help="Return the files in a directory.",
        usage="pachctl list-file repo-name commit-id [path/to/dir] [flags]",
    )
    p.add_argument("repo")
    p.add_argument("commit")
    p.add_argument("path", nargs="?", default="")
    p.add_argument("--raw", action="store_true", help=_RAW)
    p.set_defaults(run=list_file)

    p = sub.add_parser(
        "glob-file",
        help="Return files that match a glob pattern in a commit.",
        usage="pachctl glob-file repo-name commit-id pattern [flags]",
    )
    p.add_argument("repo")
    p.add_argument("commit")
    p.add_argument("pattern")
    p.add_argument("--raw", action="store_true", help=_RAW)
    p.set_defaults(run=glob_file)

    p = sub.add_parser(
        "diff-file",
        help="Return a diff of two file trees.",
        usage="pachctl diff-file new-repo-name new-commit-id new-path "
        "[old-repo-name old-commit-id old-path] [flags]",
    )
    p.add_argument("new", nargs="+", metavar="arg")
    p.add_argument(
        "-s", "--shallow", action="store_true",
        help="Specifies whether or not to diff subdirectories",
    )  # fmt: skip
    p.set_defaults(run=diff_file)

    p = sub.add_parser(
        "delete-file",
        help="Delete a file.",
        usage="pachctl delete-file repo-name commit-id path/to/file [flags]",
    )
    p.add_argument("repo")
    p.add_argument("commit")
    p.add_argument("path")
    p.set_defaults(run=delete_file)


def _api(pachd: Pachd) -> pfs_pb2_grpc.APIStub:
    return pfs_pb2_grpc.APIStub(pachd.channel)


def _file(repo: str, commit: str, path: str) -> pfs.File:
    return pfs.File(commit=pfs.Commit(repo=pfs.Repo(name=repo), id=commit), path=path)


# --- formatting ----------------------------------------------------------------


def file_type(info: pfs.FileInfo) -> str:
    return "file" if info.file_type == pfs.FILE else "dir"


def row(info: pfs.FileInfo) -> str:
    """A line of 1.7's NAME TYPE SIZE table (``pretty.PrintFileInfo``)."""
    return f"{info.file.path}\t{file_type(info)}\t{pretty.size(info.size_bytes)}\t\n"


def detailed(info: pfs.FileInfo) -> str:
    """1.7's ``PrintDetailedFileInfo``."""
    children = "".join(f" {c} " for c in info.children)
    return (
        f"Path: {info.file.path}\nType: {file_type(info)}\n"
        f"Size: {pretty.size(info.size_bytes)}\nChildren: {children}\n"
    )


def write_table(infos: Iterable[pfs.FileInfo], write: Callable[[str], object]) -> None:
    table = StreamingTable(write, FILE_HEADER)
    for info in infos:
        table.row(row(info))
    table.flush()


def table(infos: Iterable[pfs.FileInfo]) -> str:
    parts: list[str] = []
    write_table(infos, parts.append)
    return "".join(parts)


def print_infos(infos: Iterable[pfs.FileInfo], raw: bool, out: TextIO) -> None:
    if raw:
        for info in infos:
            out.write(pretty.raw(info))
    else:
        write_table(infos, out.write)


# --- streams with a fallback ---------------------------------------------------


def _with_fallback(
    streamed: Iterator[pfs.FileInfo], unary: Callable[[], Iterable[pfs.FileInfo]]
) -> Iterator[pfs.FileInfo]:
    """The streamed replies, or the unary RPC's when the server does not
    implement the stream (it says so before sending anything)."""
    sent = False
    try:
        for info in streamed:
            sent = True
            yield info
    except ServerError as exc:
        if sent or not exc.unimplemented:
            raise
        yield from unary()


def list_stream(pachd: Pachd, file: pfs.File) -> Iterator[pfs.FileInfo]:
    req = pfs.ListFileRequest(file=file)
    api = _api(pachd)
    return _with_fallback(
        pachd.stream(api.ListFileStream, req), lambda: pachd.call(api.ListFile, req).file_info
    )


def glob_stream(pachd: Pachd, commit: pfs.Commit, pattern: str) -> Iterator[pfs.FileInfo]:
    req = pfs.GlobFileRequest(commit=commit, pattern=pattern)
    api = _api(pachd)
    return _with_fallback(
        pachd.stream(api.GlobFileStream, req), lambda: pachd.call(api.GlobFile, req).file_info
    )


# --- commands ------------------------------------------------------------------


def copy_file(args: argparse.Namespace, out: TextIO) -> int:
    req = pfs.CopyFileRequest(
        src=_file(args.src_repo, args.src_commit, args.src_path),
        dst=_file(args.dst_repo, args.dst_commit, args.dst_path),
        overwrite=args.overwrite,
    )
    with Pachd(from_env(), timeout=STREAM_TIMEOUT_S) as pachd:
        pachd.call(_api(pachd).CopyFile, req)
    return 0


def inspect_file(args: argparse.Namespace, out: TextIO) -> int:
    req = pfs.InspectFileRequest(file=_file(args.repo, args.commit, args.path))
    with Pachd(from_env()) as pachd:
        info = pachd.call(_api(pachd).InspectFile, req)
    out.write(pretty.raw(info) if args.raw else detailed(info))
    return 0


def list_file(args: argparse.Namespace, out: TextIO) -> int:
    with Pachd(from_env(), timeout=STREAM_TIMEOUT_S) as pachd:
        print_infos(list_stream(pachd, _file(args.repo, args.commit, args.path)), args.raw, out)
    return 0


def glob_file(args: argparse.Namespace, out: TextIO) -> int:
    commit = pfs.Commit(repo=pfs.Repo(name=args.repo), id=args.commit)
    with Pachd(from_env(), timeout=STREAM_TIMEOUT_S) as pachd:
        print_infos(glob_stream(pachd, commit, args.pattern), args.raw, out)
    return 0


def diff_file(args: argparse.Namespace, out: TextIO) -> int:
    given: list[str] = args.new
    if len(given) not in (3, 6):
        raise InvalidArgument(f"diff-file expects either 3 or 6 args, got {len(given)}")
    req = pfs.DiffFileRequest(new_file=_file(*given[:3]), shallow=args.shallow)
    if len(given) == 6:
        req.old_file.CopyFrom(_file(*given[3:]))
    with Pachd(from_env(), timeout=STREAM_TIMEOUT_S) as pachd:
        diff = pachd.call(_api(pachd).DiffFile, req)
    out.write(diff_text(diff))
    return 0


def diff_text(diff: pfs.DiffFileResponse) -> str:
    """1.7's diff-file output: a "New Files:" table, an "Old Files:" table,
    each only when it has rows."""
    text = ""
    if diff.new_files:
        text += "New Files:\n" + table(diff.new_files)
    if diff.old_files:
        text += "Old Files:\n" + table(diff.old_files)
    return text


def delete_file(args: argparse.Namespace, out: TextIO) -> int:
    req = pfs.DeleteFileRequest(file=_file(args.repo, args.commit, args.path))
    with Pachd(from_env()) as pachd:
        pachd.call(_api(pachd).DeleteFile, req)
    return 0


# --- get-file ------------------------------------------------------------------


def get_file(args: argparse.Namespace, out: TextIO) -> int:
    if args.parallelism < 1:
        raise InvalidArgument("--parallelism must be at least 1")
    if args.recursive:
        if not args.output:
            raise InvalidArgument(
                "an output path needs to be specified when using the --recursive flag"
            )
        with Pachd(from_env(), timeout=STREAM_TIMEOUT_S) as pachd:
            Puller(pachd, args.parallelism).pull(args.repo, args.commit, args.path, args.output)
        return 0
    file = _file(args.repo, args.commit, args.path)
    with Pachd(from_env(), timeout=STREAM_TIMEOUT_S) as pachd:
        if _fast_get(pachd, file, args.output, out):
            return 0
        replies = _get_file(pachd, pfs.GetFileRequest(file=file))
        try:
            first = next(replies, None)
        except ServerError as exc:
            if _is_dir(pachd, file):
                raise _dir_error(file, str(exc)) from None
            raise
        if first is None and _is_dir(pachd, file):  # empty: no header or footer
            raise _dir_error(file, "it has no header or footer")
        if args.output:
            with open(args.output, "wb") as sink:
                _drain(first, replies, sink.write)
        else:
            binary = getattr(out, "buffer", None)
            _drain(
                first, replies, binary.write if binary else lambda b: out.write(bytes(b).decode())
            )
            out.flush()
    return 0


Bytes = bytes | memoryview


def _fast_get(pachd: Pachd, file: pfs.File, output: str, out: TextIO) -> bool:
    """One file over the gateway's HTTP download (``fastget``), when it can
    serve it: False, with nothing written, sends the caller to gRPC."""
    if any(c in GLOB_SPECIAL for c in file.path):  # the download reads a glob itself
        return False
    try:
        info, call = _api(pachd).InspectFile.with_call(
            pfs.InspectFileRequest(file=file), timeout=DEFAULT_TIMEOUT_S
        )
        metadata = call.trailing_metadata()
    except grpc.RpcError:
        return False  # gRPC says what is wrong
    if info.file_type != pfs.FILE:
        return False
    pinned = info.file.commit.id or file.commit.id
    if _local_get(pachd, file, pinned, metadata, output, out):
        return True
    address = fastget.http_address(os.environ, pachd.address, metadata)
    if address is None:
        return False
    head = fastget.request_head(address, file.commit.repo.name, pinned, file.path, pachd.token)
    size, etag = info.size_bytes, info.hash.hex()
    if not output:
        binary = getattr(out, "buffer", None)
        out.flush()
        fd = _fileno(binary)
        write = binary.write if binary else lambda b: out.write(bytes(b).decode())
        done = fastget.fetch(address, head, size, etag, fd, write)
        if binary is not None:
            binary.flush()
        return done
    with open(output, "wb") as sink:
        try:
            return fastget.fetch(address, head, size, etag, sink.fileno(), sink.write)
        except BaseException:
            sink.truncate(0)  # no half file left behind
            raise


def _local_get(
    pachd: Pachd, file: pfs.File, pinned: str, metadata: object, output: str, out: TextIO
) -> bool:
    """The same-host read socket InspectFile advertised (``localget``),
    remembered for the next get-file once it served this one."""
    where = localget.advertised(metadata) if localget.enabled(os.environ) else None
    if where is None:
        return False
    from programs.pachctl.commands import getfile  # its group; loaded already by get-file

    try:
        repo = file.commit.repo.name
        done = getfile.read_local(
            where, pachd.address, pachd.token, repo, pinned, file.path, output, out
        )
    except localget.Mismatch:
        return False
    if done:
        localget.remember(pachd.address, where)
    return done


def _fileno(stream: object) -> int | None:
    try:
        return stream.fileno() if stream is not None else None  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return None


def _get_file(pachd: Pachd, req: pfs.GetFileRequest) -> Iterator[Bytes]:
    """GetFile's bytes, reply by reply: each reply's ``BytesValue`` is read
    as a view of the received message (no message object, no copy)."""
    rpc = pachd.channel.unary_stream(
        "/pfs.API/GetFile",
        request_serializer=pfs.GetFileRequest.SerializeToString,
        response_deserializer=bytes_value.payload,
    )
    return pachd.stream(rpc, req)


def _drain(first: Bytes | None, replies: Iterator[Bytes], write: Callable[[Bytes], object]) -> None:
    if first is None:
        return
    write(first)
    for block in replies:
        write(block)


def _is_dir(pachd: Pachd, file: pfs.File) -> bool:
    try:
        info = pachd.call(_api(pachd).InspectFile, pfs.InspectFileRequest(file=file))
    except PachError:
        return False
    return info.file_type == pfs.DIR


def _dir_error(file: pfs.File, reason: str) -> InvalidArgument:
    """A directory that cannot be read as one file: say how to download it."""
    return InvalidArgument(
        f"{file.path} is a directory ({reason}): use get-file -r -o <local dir> to download it"
    )


def _local_path(root: Path, base: str, path: str) -> Path:
    """Where the repo file ``path`` under ``base`` goes below ``root``."""
    rel = posixpath.relpath(posixpath.join("/", path), posixpath.join("/", base))
    parts = [] if rel == "." else rel.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidArgument(f"refusing to write {path}: it is not under {base}")
    return root.joinpath(*parts)


class Puller:
    """``get-file -r``: walks a directory with ``ListFileStream`` (one
    directory at a time; only the directories still to visit are kept) and
    downloads up to ``parallelism`` files at once, each streamed to disk."""

    def __init__(self, pachd: Pachd, parallelism: int) -> None:
        self.pachd = pachd
        self.parallelism = parallelism
        self._slots = threading.BoundedSemaphore(parallelism)
        self._failed: BaseException | None = None
        self._lock = threading.Lock()
        self.meter: progress.Meter | None = None

    def pull(self, repo: str, commit: str, path: str, output: str) -> None:
        api = _api(self.pachd)
        # Read every file from the same commit, even if the branch moves on.
        head = self.pachd.call(
            api.InspectCommit,
            pfs.InspectCommitRequest(commit=pfs.Commit(repo=pfs.Repo(name=repo), id=commit)),
        )
        pinned = head.commit.id or commit
        root_info = self.pachd.call(
            api.InspectFile, pfs.InspectFileRequest(file=_file(repo, pinned, path))
        )
        root = Path(output)
        self.meter = progress.Meter(f"get-file {repo}@{pinned}:{path}", root_info.size_bytes)
        with ThreadPoolExecutor(self.parallelism, thread_name_prefix="get-file") as pool:
            try:
                if root_info.file_type != pfs.DIR:
                    self._submit(pool, _file(repo, pinned, root_info.file.path), root)
                else:
                    self._walk(pool, repo, pinned, root_info.file.path, root)
            finally:
                pool.shutdown(wait=True)
        if self._failed is not None:
            raise self._failed
        self.meter.done()

    def _walk(
        self, pool: ThreadPoolExecutor, repo: str, commit: str, base: str, root: Path
    ) -> None:
        root.mkdir(parents=True, exist_ok=True)
        todo = [base]
        while todo and self._failed is None:
            directory = todo.pop()
            for info in list_stream(self.pachd, _file(repo, commit, directory)):
                if self._failed is not None:
                    break
                local = _local_path(root, base, info.file.path)
                if info.file_type == pfs.DIR:
                    local.mkdir(parents=True, exist_ok=True)
                    todo.append(info.file.path)
                else:
                    self._submit(pool, _file(repo, commit, info.file.path), local)

    def _submit(self, pool: ThreadPoolExecutor, file: pfs.File, local: Path) -> None:
        self._slots.acquire()  # at most ``parallelism`` downloads queued or running
        future = pool.submit(self._download, file, local)
        future.add_done_callback(self._done)

    def _done(self, future: Future[None]) -> None:
        self._slots.release()
        exc = future.exception()
        if exc is not None:
            with self._lock:
                if self._failed is None:
                    self._failed = exc

    def _download(self, file: pfs.File, local: Path) -> None:
        if self._failed is not None:
            return
        replies = _get_file(self.pachd, pfs.GetFileRequest(file=file))
        first = next(replies, None)
        local.parent.mkdir(parents=True, exist_ok=True)
        partial = local.with_name(f".{local.name}.partial-{os.getpid()}")
        try:
            with open(partial, "wb") as sink:
                meter = self.meter

                def write(block: Bytes) -> None:
                    sink.write(block)
                    if meter is not None:
                        meter.add(len(block))

                _drain(first, replies, write)
            partial.replace(local)
            if self.meter is not None:
                self.meter.add(files=1)
        finally:
            partial.unlink(missing_ok=True)
