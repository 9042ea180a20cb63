"""Admin commands: extract, restore, inspect-cluster (Pachyderm 1.7's
``admin`` group) and delete-all.

``extract`` writes the framed extract stream (docs/decisions/0011) to stdout,
or has pachd write it to ``-u URL``; ``restore`` sends such a stream from
stdin, or has pachd read it from ``-u URL``. Both move the stream as blocks
of its bytes (``Op.frames``), not one gRPC message per record, and both run
as long as their work does: they do not have pachctl's default deadline.

``delete-all`` asks first, as 1.7 does, and reads the answer from stdin: a
line starting with ``y``/``Y`` deletes, any other line deletes nothing; no
line at all (stdin closed, e.g. a script without a terminal) is an error
that names ``--force``, which skips the question."""

from __future__ import annotations

import argparse
import asyncio
import os
import stat
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import BinaryIO, TextIO

from google.protobuf.empty_pb2 import Empty

from libs.api.admin import admin_pb2 as admin
from libs.api.admin import admin_pb2_grpc
from libs.api.internal import backup_pb2
from libs.api.pfs import pfs_pb2, pfs_pb2_grpc
from libs.api.pps import pps_pb2 as pps
from libs.api.pps import pps_pb2_grpc
from libs.errors import FailedPrecondition, InvalidArgument, PachError
from programs.pachctl import pretty, progress
from programs.pachctl.address import from_env
from programs.pachctl.client import LONG_TIMEOUT_S, Pachd

# How often the restore progress line is redrawn on a terminal.
REDRAW_S = 0.1
# Bytes read from stdin at a time while restoring.
READ_BLOCK = 1 << 20
QUESTION = (
    "Are you sure you want to delete all ACLs, repos, commits, files, pipelines and jobs?\nyN\n"
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "extract",
        help="Extract Pachyderm state to stdout or an object store bucket.",
        description="Extract Pachyderm state to stdout or an object store bucket.\n\n"
        "  pachctl extract >backup\n  pachctl extract -u s3://bucket/backup",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--no-objects",
        action="store_true",
        help="don't extract from object storage, only extract the event log",
    )
    p.add_argument(
        "-u",
        "--url",
        default="",
        help="An object storage url (i.e. s3://...) or an absolute local path to extract to.",
    )
    p.set_defaults(run=extract)

    p = sub.add_parser(
        "restore",
        help="Restore Pachyderm state from stdin or an object store.",
        description="Restore Pachyderm state from stdin or an object store.\n\n"
        "  pachctl restore <backup\n  pachctl restore -u s3://bucket/backup",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "-u",
        "--url",
        default="",
        help="An object storage url (i.e. s3://...) or an absolute local path to restore from.",
    )
    p.set_defaults(run=restore)

    p = sub.add_parser("inspect-cluster", help="Returns info about the pachyderm cluster")
    p.set_defaults(run=inspect_cluster)

    p = sub.add_parser(
        "delete-all",
        help="Delete everything.",
        description="Delete all repos, commits, files, pipelines and jobs.\n"
        "This resets the cluster to its initial state (its event log stays: "
        "a restore needs a new cluster).",
    )
    p.add_argument("--force", action="store_true", help="delete without asking for confirmation")
    p.set_defaults(run=delete_all)


def _api(pachd: Pachd) -> admin_pb2_grpc.APIStub:
    return admin_pb2_grpc.APIStub(pachd.channel)


def inspect_cluster(args: argparse.Namespace, out: TextIO) -> int:
    with Pachd(from_env()) as pachd:
        info = pachd.call(_api(pachd).InspectCluster, Empty())
    out.write(f"{info.id}\n")
    return 0


# --- extract ---------------------------------------------------------------


def _binary_out(out: TextIO) -> BinaryIO:
    if out.isatty():
        raise InvalidArgument(
            "extract writes a binary stream: redirect stdout to a file "
            "(pachctl extract >backup) or use -u URL"
        )
    buffer: BinaryIO | None = getattr(out, "buffer", None)
    if buffer is None:
        raise InvalidArgument("extract needs a binary stdout to write the stream to")
    return buffer


def extract(args: argparse.Namespace, out: TextIO) -> int:
    request = admin.ExtractRequest(URL=args.url, no_objects=args.no_objects)
    if args.url:
        with Pachd(from_env(), timeout=LONG_TIMEOUT_S) as pachd:
            for _ in pachd.stream(_api(pachd).Extract, request):
                pass  # pachd writes to the URL and streams nothing back
        return 0
    sink = _binary_out(out)
    out.flush()
    request.framed = True  # the file's bytes in blocks, not one message per record
    meter = progress.Meter("extract")
    with Pachd(from_env(), timeout=LONG_TIMEOUT_S) as pachd:
        for op in pachd.stream(_api(pachd).Extract, request):
            if not op.frames:
                raise InvalidArgument("pachd sent an extract op without frames")
            sink.write(op.frames)
            meter.add(len(op.frames))
    sink.flush()
    meter.done()
    return 0


# --- restore ---------------------------------------------------------------


class Progress:
    """What a restore has sent: bytes of stdin, events and objects counted
    from the frames. On a terminal it redraws one line on ``err``; otherwise
    it prints only the final line."""

    def __init__(self, err: TextIO, total: int | None, live: bool) -> None:
        self.err = err
        self.total = total
        self.live = live
        self.sent = 0
        self.events = 0
        self.objects = 0
        self._shown = 0.0

    def count(self, record: backup_pb2.ExtractRecord) -> None:
        kind = record.WhichOneof("record")
        if kind == "events":
            self.events += 1
        elif kind == "object_end":
            self.objects += 1

    def line(self) -> str:
        if self.total:
            pct = min(100, self.sent * 100 // self.total)
            width = 30
            filled = width * pct // 100
            bar = "=" * filled + " " * (width - filled)
            sent = f"[{bar}] {pct:3d}% {pretty.size(self.sent)}/{pretty.size(self.total)}"
        else:
            sent = pretty.size(self.sent)
        return f"{sent}, {self.events} events, {self.objects} objects"

    def show(self) -> None:
        """Redraw the line, at most ``REDRAW_S`` apart."""
        now = time.monotonic()
        if self.live and now - self._shown >= REDRAW_S:
            self._shown = now
            self.err.write(f"\r\x1b[K{self.line()}")
            self.err.flush()

    def done(self) -> None:
        if self.live:
            self.err.write("\r\x1b[K")
        self.err.write(
            f"restored {self.events} events and {self.objects} objects ({pretty.size(self.sent)})\n"
        )
        self.err.flush()


def _stdin_size(source: BinaryIO) -> int | None:
    try:
        info = os.fstat(source.fileno())
    except (OSError, ValueError):
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def restore(args: argparse.Namespace, out: TextIO) -> int:
    if args.url:
        with Pachd(from_env(), timeout=LONG_TIMEOUT_S) as pachd:
            pachd.call(_api(pachd).Restore, iter([admin.RestoreRequest(URL=args.url)]))
        return 0
    source = sys.stdin.buffer
    if source.isatty():
        raise InvalidArgument(
            "restore reads an extract from stdin: pachctl restore <backup, or use -u URL"
        )
    progress = Progress(sys.stderr, _stdin_size(source), sys.stderr.isatty())
    asyncio.run(_restore_stream(source, progress))
    progress.done()
    return 0


async def _restore_stream(source: BinaryIO, progress: Progress) -> None:
    """Frames from ``source`` into one Restore call. A stream pachctl cannot
    read (bad magic, a broken frame) cancels the call, so pachd restores
    nothing, and that error is the one reported."""
    import grpc
    import grpc.aio

    from libs.extract_format import decode_frames

    failed: list[PachError] = []

    async def chunks() -> AsyncIterator[bytes]:
        read: Callable[[int], bytes] = getattr(source, "read1", source.read)
        while block := read(READ_BLOCK):
            progress.sent += len(block)
            yield block

    async def requests() -> AsyncIterator[admin.RestoreRequest]:
        # The blocks go as they were read (Op.frames); decoding them here too
        # counts the progress and stops at a broken stream before pachd
        # would.
        read: list[bytes] = []

        async def kept() -> AsyncIterator[bytes]:
            async for block in chunks():
                read.append(block)
                yield block

        try:
            async for record in decode_frames(kept()):
                progress.count(record)
                progress.show()
                while read:
                    yield admin.RestoreRequest(op=admin.Op(frames=read.pop(0)))
        except PachError as exc:
            failed.append(exc)
            call.cancel()
            return
        while read:
            yield admin.RestoreRequest(op=admin.Op(frames=read.pop(0)))

    address = from_env()
    async with grpc.aio.insecure_channel(address.target) as channel:
        call = admin_pb2_grpc.APIStub(channel).Restore(
            requests(),  # type: ignore[arg-type]
            timeout=LONG_TIMEOUT_S,
        )
        try:
            await call
        except (grpc.RpcError, asyncio.CancelledError) as err:
            if failed:
                raise failed[0] from None
            if isinstance(err, asyncio.CancelledError):
                raise
            with Pachd(address) as pachd:
                raise pachd.translate(err) from None
    if failed:
        raise failed[0]


# --- delete-all -------------------------------------------------------------


def _confirmed(out: TextIO) -> bool:
    with Pachd(from_env()) as pachd:
        repos = pachd.call(pfs_pb2_grpc.APIStub(pachd.channel).ListRepo, pfs_pb2.ListRepoRequest())
        pipelines = pachd.call(
            pps_pb2_grpc.APIStub(pachd.channel).ListPipeline, pps.ListPipelineRequest()
        )
    out.write(QUESTION)
    if repos.repo_info:
        out.write(f"Repos to delete: {', '.join(r.repo.name for r in repos.repo_info)}\n")
    if pipelines.pipeline_info:
        names = ", ".join(p.pipeline.name for p in pipelines.pipeline_info)
        out.write(f"Pipelines to delete: {names}\n")
    out.flush()
    answer = sys.stdin.readline()
    if not answer:
        raise FailedPrecondition(
            "delete-all: no answer on stdin; answer y to delete everything, "
            "or pass --force to skip the question"
        )
    return answer[0] in "yY"


def delete_all(args: argparse.Namespace, out: TextIO) -> int:
    if not args.force and not _confirmed(out):
        return 0
    with Pachd(from_env(), timeout=LONG_TIMEOUT_S) as pachd:
        pachd.call(pps_pb2_grpc.APIStub(pachd.channel).DeleteAll, Empty())
        pachd.call(pfs_pb2_grpc.APIStub(pachd.channel).DeleteAll, Empty())
    return 0
