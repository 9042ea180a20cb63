"""put-file, put-header and put-footer, as Pachyderm 1.7's pachctl runs them.

One invocation is one ``PutFile`` stream, so on a branch without an open
commit every file it puts lands in the one commit the server opens for the
stream (1.7 shares one ``PutFileClient`` the same way). ``-p`` files are read
ahead concurrently, each a few blocks at a time, while the stream sends them
in order; no file is ever held in memory whole. A URL source is sent as the
request's ``url`` (the server fetches it), with no bytes."""

from __future__ import annotations

import argparse
import contextlib
import os
import posixpath
import queue
import re
import sys
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, NamedTuple, TextIO
from urllib.parse import urlparse

import grpc
from google.protobuf import empty_pb2

from libs.api.pfs import pfs_pb2 as pfs
from libs.errors import InvalidArgument
from programs.pachctl import progress
from programs.pachctl.address import from_env
from programs.pachctl.client import LONG_TIMEOUT_S, Pachd

# The gateway takes messages up to 1 MiB on the bus side; blocks stay well under it.
BLOCK = 512 * 1024
# Files up to this size are read where the stream is sent, not ahead.
SMALL_FILE = 64 * 1024
# Small files sent in one message: at most this many, of about this many bytes.
BATCH_FILES = 1000
BATCH_BYTES = 1024 * 1024
# Blocks each read-ahead file may hold while it waits for its turn.
READ_AHEAD_BLOCKS = 2
# Streams of big files run as long as they need to.
STREAM_TIMEOUT_S = LONG_TIMEOUT_S
# Pachyderm 1.7's client.MaxHeaderFooterSize.
MAX_HEADER_FOOTER = 1024 * 1024
DEFAULT_PARALLELISM = 10

SPLITS = {"line": pfs.LINE, "json": pfs.JSON, "sql": pfs.SQL}

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(source: str) -> bool:
    return bool(_URL.match(source))


def go_join(*parts: str) -> str:
    """Go's ``filepath.Join``: the non-empty parts joined by ``/``, cleaned."""
    joined = "/".join(p for p in parts if p)
    if not joined:
        return ""
    cleaned = posixpath.normpath(joined)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("/") else cleaned


def url_path(url: str) -> str:
    """The part of a URL that names a file in the repo (1.7's ``joinPaths``):
    its path, or for ``pfs://host/repo/branch/path`` the path after the branch."""
    parsed = urlparse(url)
    if parsed.scheme == "pfs":
        parts = parsed.path.lstrip("/").split("/")
        return "/".join(parts[2:]) if len(parts) >= 3 else ""
    return parsed.path.lstrip("/")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "put-file",
        help="Put a file into the filesystem.",
        usage="pachctl put-file repo-name branch [path/to/file/in/pfs] [flags]",
    )
    p.add_argument("repo")
    p.add_argument("branch")
    p.add_argument("path", nargs="?", default=None)
    p.add_argument(
        "-f",
        "--file",
        action="append",
        dest="files",
        help="The file to be put, it can be a local file or a URL (- for stdin); repeatable.",
    )
    p.add_argument(
        "-i",
        "--input-file",
        default="",
        help="Read filepaths or URLs from a file.  If - is used, paths are read from the "
        "standard input.",
    )
    p.add_argument(
        "-r", "--recursive", action="store_true",
        help="Recursively put the files in a directory.",
    )  # fmt: skip
    p.add_argument(
        "-p", "--parallelism", type=int, default=DEFAULT_PARALLELISM,
        help="The maximum number of files that can be uploaded in parallel.",
    )  # fmt: skip
    p.add_argument(
        "--split", default="",
        help="Split the input file into smaller files, subject to the constraints of "
        "--target-file-datums and --target-file-bytes. Permissible values are `json`, `line` "
        "and `sql`.",
    )  # fmt: skip
    p.add_argument(
        "--target-file-datums", type=int, default=0,
        help="The upper bound of the number of datums that each file contains, the last file "
        "will contain fewer if the datums don't divide evenly; needs to be used with --split.",
    )  # fmt: skip
    p.add_argument(
        "--target-file-bytes", type=int, default=0,
        help="The target upper bound of the number of bytes that each file contains; needs to "
        "be used with --split.",
    )  # fmt: skip
    p.add_argument(
        "-c", "--commit", action="store_true",
        help="DEPRECATED: Put file(s) in a new commit.",
    )  # fmt: skip
    p.add_argument(
        "-o", "--overwrite", action="store_true",
        help="Overwrite the existing content of the file, either from previous commits or "
        "previous calls to put-file within this commit.",
    )  # fmt: skip
    p.add_argument(
        "-m", "--message", "--description", dest="description", default="",
        help="A description of this commit's contents (only allowed with -c; ignored, as by "
        "Pachyderm 1.7.2 and later)",
    )  # fmt: skip
    p.set_defaults(run=put_file)

    for kind in ("header", "footer"):
        p = sub.add_parser(
            f"put-{kind}",
            help=f"Put a {kind} file into the filesystem.",
            usage=f"pachctl put-{kind} repo-name branch path/to/directory/in/pfs [flags]",
        )
        p.add_argument("repo")
        p.add_argument("branch")
        p.add_argument("path")
        p.add_argument(
            "-f", "--file", dest="source", default="-",
            help="The file to be put, it can be a local file or by default will be read from "
            "stdin",
        )  # fmt: skip
        p.set_defaults(run=put_header if kind == "header" else put_footer)


def _file(repo: str, commit: str, path: str) -> pfs.File:
    return pfs.File(commit=pfs.Commit(repo=pfs.Repo(name=repo), id=commit), path=path)


# --- what to put --------------------------------------------------------------


class Put(NamedTuple):  # not a dataclass: ``dataclasses`` costs ~10 ms to load
    """One file (or URL) to put and where it goes in the repo."""

    source: str  # a local path, "-" for stdin, or a URL
    dest: str
    url: bool = False
    recursive: bool = False  # a URL the server expands (an S3 prefix …)


def check_flags(args: argparse.Namespace) -> None:
    if args.split and args.split not in SPLITS:
        raise InvalidArgument(
            f"unrecognized delimiter '{args.split}'; only accepts 'json', 'line', or 'sql'"
        )
    if not args.split and (args.target_file_datums or args.target_file_bytes):
        raise InvalidArgument("--target-file-datums and --target-file-bytes need --split")
    if args.target_file_datums < 0 or args.target_file_bytes < 0:
        raise InvalidArgument("--target-file-datums and --target-file-bytes cannot be negative")
    if args.parallelism < 1:
        raise InvalidArgument("--parallelism must be at least 1")


def _listing(name: str) -> Iterator[str]:
    """The sources an ``-i`` file (local, ``-`` or a URL) names, one a line."""
    if name == "-":
        lines: Iterable[str] = sys.stdin
        yield from (ln.strip() for ln in lines if ln.strip())
        return
    if is_url(name):
        import urllib.request  # only for a URL (costs ~12 ms to load)

        try:
            with urllib.request.urlopen(name, timeout=60) as reply:
                for raw in reply:
                    if line := raw.decode().strip():
                        yield line
        except OSError as exc:
            raise InvalidArgument(f"cannot read the input file {name}: {exc}") from None
        return
    with open(name) as listing:
        yield from (ln.strip() for ln in listing if ln.strip())


def sources(args: argparse.Namespace) -> list[str]:
    if args.input_file:
        return list(_listing(args.input_file))
    return list(args.files or ["-"])


def plan(args: argparse.Namespace, found: list[str]) -> Iterator[Put]:
    """Every file to put, named as 1.7 names them: with no path, the source
    as given; one source and a path, the path; several, path/source."""
    path: str | None = args.path
    for source in found:
        if path is None:
            if source == "-":
                raise InvalidArgument(
                    "must specify filename when reading data from stdin "
                    "(a path in the repo is required)"
                )
            dest = go_join(url_path(source) if is_url(source) else source)
        elif len(found) == 1:
            dest = path
        else:
            dest = go_join(path, url_path(source) if is_url(source) else source)
        if source == "-":
            if args.recursive:
                raise InvalidArgument("cannot set -r and read from stdin (must also set -f or -i)")
            yield Put(source, dest)
        elif is_url(source):
            yield Put(source, dest, url=True, recursive=args.recursive)
        else:
            yield from _local(source, dest, args.recursive)


def _local(source: str, dest: str, recursive: bool) -> Iterator[Put]:
    local = Path(source)
    if local.is_dir():
        if not recursive:
            raise InvalidArgument(f"{source} is a directory: use -r to put it recursively")
        # Plain strings, not Path objects: path parsing per file cost more
        # than reading a 1 KiB file.
        top = str(local)
        for root, dirs, files in os.walk(top, onerror=_raise):
            dirs.sort()
            rel = os.path.relpath(root, top)
            base = go_join(dest, "" if rel == "." else rel.replace(os.sep, "/"))
            prefix = base if base.endswith("/") else base + "/" if base else ""
            for name in sorted(files):
                yield Put(os.path.join(root, name), prefix + name)
        return
    if not local.exists():
        raise InvalidArgument(f"{source}: no such file")
    if not os.access(local, os.R_OK):
        raise InvalidArgument(f"{source}: permission denied")
    yield Put(source, dest)


def _raise(err: OSError) -> None:
    raise err


def checked(args: argparse.Namespace, found: list[str]) -> int:
    """Walk the whole plan once before anything is sent: a missing file or
    a path put twice fails the command with nothing written. Returns the
    number of files (only the paths are kept, as 1.7 keeps them)."""
    seen: set[str] = set()
    for put in plan(args, found):
        if put.dest in seen:
            raise InvalidArgument(f"multiple files put with the path {put.dest}, aborting")
        seen.add(put.dest)
    return len(seen)


# --- reading local files ahead ----------------------------------------------


class _Stop(Exception):
    """The stream is over (sent or failed): read-ahead threads give up."""


class ReadAhead:
    """Reads up to ``parallelism`` upcoming files concurrently, each into a
    queue of at most ``READ_AHEAD_BLOCKS`` blocks, and hands them out in
    order. ``close()`` releases every thread, whatever state they are in."""

    def __init__(self, parallelism: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=parallelism, thread_name_prefix="put-file")
        self._parallelism = parallelism
        self._stop = threading.Event()

    def close(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _offer(self, q: queue.Queue[bytes | BaseException | None], item: object) -> None:
        while not self._stop.is_set():
            try:
                q.put(item, timeout=0.1)  # type: ignore[arg-type]
                return
            except queue.Full:
                continue
        raise _Stop

    def _read(self, path: str, q: queue.Queue[bytes | BaseException | None]) -> None:
        try:
            with open(path, "rb") as stream:
                while block := stream.read(BLOCK):
                    self._offer(q, block)
            self._offer(q, None)
        except _Stop:
            return
        except OSError as exc:
            try:
                self._offer(q, exc)
            except _Stop:
                return

    def files(self, puts: Iterable[Put]) -> Iterator[tuple[Put, Iterator[bytes]]]:
        """Each put with its blocks (none for a URL)."""
        window: list[tuple[Put, queue.Queue[bytes | BaseException | None] | None]] = []
        upcoming = iter(puts)
        exhausted = False
        while True:
            while not exhausted and len(window) < self._parallelism:
                put = next(upcoming, None)
                if put is None:
                    exhausted = True
                    break
                q: queue.Queue[bytes | BaseException | None] | None = None
                if not put.url and put.source != "-" and not _small(put.source):
                    q = queue.Queue(maxsize=READ_AHEAD_BLOCKS)
                    self._pool.submit(self._read, put.source, q)
                window.append((put, q))
            if not window:
                return
            put, q = window.pop(0)
            yield put, self._blocks(put, q)

    def _blocks(
        self, put: Put, q: queue.Queue[bytes | BaseException | None] | None
    ) -> Iterator[bytes]:
        if not put.url and q is None and put.source != "-":  # a small file: one read, here
            return Whole(_read_whole(put.source))  # an OSError is reported as the pool's are
        return self._stream(put, q)

    def _stream(
        self, put: Put, q: queue.Queue[bytes | BaseException | None] | None
    ) -> Iterator[bytes]:
        if put.url:
            return
        if q is None:  # stdin, read here in order
            if sys.stdin.isatty():
                sys.stderr.write("Reading from stdin.\n")
            while block := sys.stdin.buffer.read(BLOCK):
                yield block
            return
        while True:
            try:
                item = q.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set():
                    raise _Stop from None
                continue
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


def _read_whole(path: str) -> bytes:
    """A small file's bytes (plain descriptor reads: a file object costs
    more than reading 1 KiB)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        parts = []
        while part := os.read(fd, SMALL_FILE + 1):
            parts.append(part)
        return parts[0] if len(parts) == 1 else b"".join(parts)
    finally:
        os.close(fd)


class Whole:
    """A small file's bytes, read whole: its one block, and ``data`` for
    ``requests`` to put it in a batch."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._done = False

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._done:
            raise StopIteration
        self._done = True
        return self.data


def _small(path: str) -> bool:
    """Small enough to read in one go where the stream is sent: handing a
    small file to a read-ahead thread costs more than reading it (two
    thread switches and queue waits per file; 100,000 files of 1 KiB went
    from ~2,900 to ~7,000 files/s)."""
    try:
        return os.stat(path).st_size <= SMALL_FILE
    except OSError:
        return False  # the read-ahead reports it


class Encoded:
    """A ``PutFileRequest`` already in its wire form (``data``): a batch of
    small files (or one of them alone), ``files`` files of ``nbytes`` bytes.
    Writing the bytes directly costs a fraction of building a message per
    file."""

    __slots__ = ("data", "files", "nbytes")

    def __init__(self, data: bytes, files: int, nbytes: int) -> None:
        self.data, self.files, self.nbytes = data, files, nbytes


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Field keys of PutFileRequest (file = 1, value = 3, batch = 100) and File
# (commit = 1, path = 2), all length-delimited.
_FILE_KEY, _VALUE_KEY, _BATCH_KEY = b"\x0a", b"\x1a", _varint(100 << 3 | 2)
_COMMIT_KEY, _PATH_KEY = b"\x0a", b"\x12"


class _Entries:
    """Batch entries as bytes: the same fields, in the same order, that a
    ``PutFileRequest`` with ``file``, ``value`` and the put's options
    serializes to (the options are serialized once, from a template)."""

    def __init__(self, options: pfs.PutFileRequest, repo: str, branch: str) -> None:
        commit = pfs.Commit(repo=pfs.Repo(name=repo), id=branch).SerializeToString()
        self._commit = _COMMIT_KEY + _varint(len(commit)) + commit
        self._options = options.SerializeToString()

    def entry(self, dest: str, data: bytes) -> bytes:
        path = dest.encode()
        file = self._commit + _PATH_KEY + _varint(len(path)) + path
        value = (_VALUE_KEY, _varint(len(data)), data) if data else ()  # proto3: "" is unset
        return b"".join((_FILE_KEY, _varint(len(file)), file, *value, self._options))


def _options(args: argparse.Namespace) -> pfs.PutFileRequest:
    """The fields every file's first message carries besides its name."""
    opts = pfs.PutFileRequest()
    if args.overwrite:
        opts.overwrite_index.index = 0
    if args.split:
        opts.delimiter = SPLITS[args.split]
        opts.target_file_datums = args.target_file_datums
        opts.target_file_bytes = args.target_file_bytes
    return opts


def requests(
    args: argparse.Namespace, files: Iterable[tuple[Put, Iterator[bytes]]]
) -> Iterator[pfs.PutFileRequest | Encoded]:
    """The ``PutFile`` stream: each file's first message names it and carries
    its options, the rest carry its bytes. Small files read whole go several
    to a message (``batch``, sent already encoded): per message, gRPC costs
    more than the file."""
    options = _options(args)
    entries = _Entries(options, args.repo, args.branch)
    batch: list[bytes] = []
    size = data = 0
    for put, blocks in files:
        if isinstance(blocks, Whole):
            entry = entries.entry(put.dest, blocks.data)
            batch.append(entry)
            size += len(entry)
            data += len(blocks.data)
            if len(batch) >= BATCH_FILES or size >= BATCH_BYTES:
                yield _batched(batch, data)
                batch, size, data = [], 0, 0
            continue
        if batch:
            yield _batched(batch, data)
            batch, size, data = [], 0, 0
        first = pfs.PutFileRequest(file=_file(args.repo, args.branch, put.dest))
        first.MergeFrom(options)
        if put.url:
            first.url = put.source
            first.recursive = put.recursive
            yield first
            continue
        first.value = next(blocks, b"")
        yield first  # always one message, so an empty file is put too
        for block in blocks:
            yield pfs.PutFileRequest(value=block)
    if batch:
        yield _batched(batch, data)


def _batched(entries: list[bytes], nbytes: int) -> Encoded:
    """A message of ``entries`` holding ``nbytes`` of file content (a batch
    of one: that file's own message)."""
    if len(entries) == 1:
        return Encoded(entries[0], 1, nbytes)
    key = _BATCH_KEY
    parts: list[bytes] = []
    for e in entries:
        parts += (key, _varint(len(e)), e)
    return Encoded(b"".join(parts), len(entries), nbytes)


def _wire(req: pfs.PutFileRequest | Encoded) -> bytes:
    return req.data if isinstance(req, Encoded) else req.SerializeToString()


class _Guarded:
    """Remembers a local failure in the request iterator (gRPC only reports
    the call as cancelled) so the command can report the real cause."""

    def __init__(self, inner: Iterator[pfs.PutFileRequest | Encoded]) -> None:
        self._inner = inner
        self.error: BaseException | None = None

    def __iter__(self) -> Iterator[pfs.PutFileRequest | Encoded]:
        try:
            yield from self._inner
        except BaseException as exc:
            self.error = exc
            raise


def send(pachd: Pachd, stream: Iterator[pfs.PutFileRequest | Encoded]) -> None:
    guarded = _Guarded(stream)
    put = pachd.channel.stream_unary(
        "/pfs.API/PutFile",
        request_serializer=_wire,
        response_deserializer=empty_pb2.Empty.FromString,
    )
    try:
        put(iter(guarded), timeout=pachd.timeout)
    except grpc.RpcError as err:
        if guarded.error is not None:
            raise guarded.error from None
        raise pachd.translate(err) from None
    if guarded.error is not None:
        raise guarded.error


def put_file(args: argparse.Namespace, out: TextIO) -> int:
    check_flags(args)
    if args.commit:
        sys.stderr.write(
            "flag --commit / -c is deprecated; as of 1.7.2, you will get the same behavior "
            "without it\n"
        )
    if args.path is not None and is_url(args.path):
        sys.stderr.write(
            f'warning: PFS destination "{args.path}" looks like a URL; '
            f"did you mean -f {args.path}?\n"
        )
    found = sources(args)
    if not found:
        return 0
    checked(args, found)
    ahead = ReadAhead(args.parallelism)
    meter = _meter(args, found)
    try:
        with Pachd(from_env(), timeout=STREAM_TIMEOUT_S) as pachd:
            send(pachd, metered(requests(args, ahead.files(plan(args, found))), meter))
    finally:
        ahead.close()
    meter.done()
    return 0


def _meter(args: argparse.Namespace, found: list[str]) -> progress.Meter:
    """The put's progress: on a terminal, of the local files' total size
    (a second walk of the sources; stdin and URLs count as they come)."""
    meter = progress.Meter(f"put-file {args.repo}@{args.branch}")
    if meter.live:
        total, count = 0, 0
        for put in plan(args, found):
            count += 1
            if not put.url and put.source != "-":
                with contextlib.suppress(OSError):  # the read-ahead reports it
                    total += os.path.getsize(put.source)
        meter.total_bytes, meter.total_files = total or None, count
    return meter


def metered(
    stream: Iterator[pfs.PutFileRequest | Encoded], meter: progress.Meter
) -> Iterator[pfs.PutFileRequest | Encoded]:
    for req in stream:
        if isinstance(req, Encoded):
            meter.add(req.nbytes, files=req.files)
        else:
            meter.add(len(req.value), files=1 if req.HasField("file") else 0)
        yield req


# --- put-header / put-footer --------------------------------------------------


def _read_small(source: str, what: str) -> bytes:
    stream: BinaryIO
    with sys.stdin.buffer if source == "-" else open(source, "rb") as stream:
        content = stream.read(MAX_HEADER_FOOTER + 1)
    if len(content) > MAX_HEADER_FOOTER:
        raise InvalidArgument(f"{what} size is greater than max {MAX_HEADER_FOOTER} bytes")
    return content


def _put_metadata(args: argparse.Namespace, kind: str) -> int:
    content = _read_small(args.source, kind)
    # As 1.7: a line-split put with no bytes whose header (footer) is set.
    req = pfs.PutFileRequest(file=_file(args.repo, args.branch, args.path), delimiter=pfs.LINE)
    getattr(req, kind).value = content
    with Pachd(from_env(), timeout=STREAM_TIMEOUT_S) as pachd:
        send(pachd, iter([req]))
    return 0


def put_header(args: argparse.Namespace, out: TextIO) -> int:
    return _put_metadata(args, "header")


def put_footer(args: argparse.Namespace, out: TextIO) -> int:
    return _put_metadata(args, "footer")
