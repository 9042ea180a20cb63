"""get-file on the same host without a byte copied: the gateway answers on a
Unix socket in the cluster's data directory with the descriptors of the
object files that hold the file (docs/decisions/0039-get-file-local-socket.md;
the protocol is ``libs/local_reads.py``).

A request is authenticated and authorized exactly as the HTTP download is:
the token becomes the principal, pfs answers InspectFile and the file's
refs on its behalf (READER on the repo), and any error (bad token, no
access, no repo, ref or file, a bad path, a directory) is one error frame
before anything else is sent. Then each of the file's ranges goes, in order:
as the object file's descriptor (``O_RDONLY | O_NOFOLLOW``) when the range
is that whole object (a chunk of this file's own content), otherwise as
bytes read here (a slice of a pack, which may hold other repos' files).

Requests are bounded (one message of at most 64 KiB, 10 s to send it),
connections too (``MAX_CONNECTIONS``; one over gets an error frame), and a
client that stops reading or acknowledging is dropped after
``STALL_TIMEOUT_S``; whatever a client sends, the gateway goes on."""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import os
import socket
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from libs import local_reads as proto
from libs import trees
from libs.api.pfs import pfs_pb2 as pfs
from libs.bus import Bus
from libs.errors import (
    Internal,
    InvalidArgument,
    ObjectNotFound,
    PachError,
    ResourceExhausted,
    from_unexpected,
    to_wire,
)
from libs.objects import LocalObjectStore, _io, chunk_key
from libs.observe import get_logger
from services.gateway.app import file_pages
from services.gateway.app.identity import LocalAdvert
from services.gateway.principal import token_ask

_log = get_logger("gateway.local")

MAX_CONNECTIONS = 64
REQUEST_TIMEOUT_S = 10.0
STALL_TIMEOUT_S = 300.0
ERROR_DRAIN_S = 5.0  # after an error frame: the client reads it and closes
READ_BYTES = 1 << 20  # per pool hop of a bytes frame
_FIELDS = ("token", "repo", "ref", "path")


class LocalReads:
    """The listening socket and its connections; ``close`` removes it."""

    def __init__(
        self, path: Path, bus: Bus, store: LocalObjectStore, advert: LocalAdvert, grpc_port: int
    ) -> None:
        self.path = path
        self._bus = bus
        self._store = store
        self._advert = advert
        self._grpc_port = grpc_port
        self._listener: socket.socket | None = None
        self._ino = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def listen(
        cls, data_dir: Path, bus: Bus, store: LocalObjectStore, advert: LocalAdvert, grpc_port: int
    ) -> LocalReads:
        """Bind ``<data_dir>/run/gateway-<port>.sock`` (the directory 0700 and
        ours, the socket 0600) and start accepting; the advertisement names it."""
        run = data_dir / proto.SOCKET_DIR
        _own_private_dir(run)
        path = run / proto.socket_name(grpc_port)
        self = cls(path, bus, store, advert, grpc_port)
        # A socket left by a gateway killed on this port (a live one would
        # hold the gRPC port this gateway just bound).
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            address, dfd = proto.short_path(str(path))
            try:
                sock.bind(address)
            finally:
                if dfd is not None:
                    os.close(dfd)
            os.chmod(path, 0o600)
            self._ino = os.lstat(path).st_ino
            sock.listen(MAX_CONNECTIONS)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._listener = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._accept)
        advert.path = str(path)
        return self

    async def close(self) -> None:
        self._advert.path = ""
        sock, self._listener = self._listener, None
        if sock is not None:
            asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()
            with contextlib.suppress(OSError):
                if os.lstat(self.path).st_ino == self._ino:
                    os.unlink(self.path)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _accept(self) -> None:
        if self._listener is None:
            return
        while True:
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors: try again at the next wake-up
                _log.warning("local read socket: accept failed", error=str(exc))
                return
            conn.setblocking(False)
            task = asyncio.create_task(self._handle(conn), name="local-read")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handle(self, conn: socket.socket) -> None:
        with conn:
            link = _Link(conn)
            try:
                if len(self._tasks) > MAX_CONNECTIONS:
                    raise ResourceExhausted(
                        f"the local read socket serves {MAX_CONNECTIONS} reads at once; "
                        "try again or use gRPC"
                    )
                raw = await link.recv_request()
                token, repo, ref, path = _parse(raw)
                await self._serve(link, token, repo, ref, path)
            except (ConnectionError, TimeoutError):
                return  # the client went away or stalled: nobody to tell
            except Exception as exc:
                err = from_unexpected(exc, "the local read socket")
                if not isinstance(exc, PachError):
                    _log.error("local read failed", error=str(err), exc_info=exc)
                with contextlib.suppress(ConnectionError, TimeoutError, OSError):
                    await link.send(_frame({"error": _error(err)}))
                    await link.drain_acks(ERROR_DRAIN_S)

    async def _serve(self, link: _Link, token: str, repo: str, ref: str, path: str) -> None:
        ask = token_ask(self._bus, token, "pfs")
        file = pfs.File(commit=pfs.Commit(repo=pfs.Repo(name=repo), id=ref), path=path)
        info = await ask("InspectFile", pfs.InspectFileRequest(file=file), pfs.FileInfo, "qry")
        if info.file_type != pfs.FILE:
            raise InvalidArgument(f"{path} is a directory, not a file", path=path)
        size = info.size_bytes
        head = {
            "ok": True,
            "cluster": await self._advert.identity.get(),
            "grpc_port": self._grpc_port,
            "commit": info.file.commit.id,
            "size": size,
            "hash": info.hash.hex(),
        }
        await link.send(_frame(head))
        pinned = pfs.File(commit=info.file.commit, path=path)
        batch: list[tuple[str, int, int]] = []
        sent = 0
        async for chunk, offset, length in file_pages.file_ranges(ask, pinned, 0, size):
            batch.append((chunk, offset, length))
            if len(batch) >= proto.FDS_PER_FRAME:
                sent += await self._send_batch(link, batch)
                batch = []
        if batch:
            sent += await self._send_batch(link, batch)
        if sent != size:
            raise Internal(f"{path}: its refs hold {sent} bytes, not {size}", path=path)
        await link.send(_frame({"end": True}))
        await link.drain_acks()

    async def _send_batch(self, link: _Link, batch: list[tuple[str, int, int]]) -> int:
        """Send ``batch``'s ranges in order: runs of whole objects as one
        descriptor frame, the others as bytes. Returns the bytes covered."""
        paths = [(self._store.path_of(chunk_key(c)), c, o, n) for c, o, n in batch]
        opened = await _io.run(_open_all, paths)
        try:
            run: list[tuple[int, int, int]] = []
            for (fd, whole), (_, _, offset, length) in zip(opened, paths, strict=True):
                if whole:
                    run.append((fd, offset, length))
                    continue
                if run:
                    await link.send_fds(run)
                    run = []
                await link.send_bytes(fd, offset, length)
            if run:
                await link.send_fds(run)
        finally:
            await _io.run(_close_all, [fd for fd, _ in opened])
        return sum(n for _, _, _, n in paths)


class _Link:
    """One connection: whole messages in and out, waiting on the event loop."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.loop = asyncio.get_running_loop()
        self.unacked = 0

    async def _ready(self, writer: bool, timeout: float) -> None:
        fd = self.conn.fileno()
        done = self.loop.create_future()

        def wake() -> None:
            if not done.done():
                done.set_result(None)

        if writer:
            self.loop.add_writer(fd, wake)
        else:
            self.loop.add_reader(fd, wake)
        try:
            await asyncio.wait_for(done, timeout)
        finally:
            if writer:
                self.loop.remove_writer(fd)
            else:
                self.loop.remove_reader(fd)

    async def _recv(self, size: int, timeout: float) -> tuple[bytes, int]:
        while True:
            try:
                data, _, flags, _ = self.conn.recvmsg(size)  # descriptors sent to us: dropped
            except (BlockingIOError, InterruptedError):
                await self._ready(False, timeout)
                continue
            return data, flags

    async def recv_request(self) -> bytes:
        data, flags = await self._recv(proto.MAX_REQUEST, REQUEST_TIMEOUT_S)
        if flags & socket.MSG_TRUNC:
            raise InvalidArgument(
                f"a local read request is over the limit of {proto.MAX_REQUEST} bytes",
                limit=proto.MAX_REQUEST,
            )
        if not data:
            raise ConnectionResetError("closed before its request")
        return data

    async def send(self, data: bytes | memoryview, fds: Sequence[int] = ()) -> None:
        ancillary = []
        if fds:
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
        while True:
            try:
                self.conn.sendmsg([data], ancillary)
                return
            except (BlockingIOError, InterruptedError):
                await self._ready(True, STALL_TIMEOUT_S)

    async def send_fds(self, run: list[tuple[int, int, int]]) -> None:
        while self.unacked >= proto.WINDOW:
            ack, _ = await self._recv(16, STALL_TIMEOUT_S)
            if ack != proto.ACK:
                raise ConnectionResetError("the client sent no acknowledgement")
            self.unacked -= 1
        ranges = [[offset, length] for _, offset, length in run]
        await self.send(_frame({"fds": ranges}), [fd for fd, _, _ in run])
        self.unacked += 1

    async def drain_acks(self, timeout: float = STALL_TIMEOUT_S) -> None:
        """Read the acknowledgements still on their way. A Unix socket closed
        with unread messages resets its peer, which then loses the frames
        it has not read yet (the end frame, the last bytes)."""
        while self.unacked > 0:
            ack, _ = await self._recv(16, timeout)
            if ack != proto.ACK:
                return  # closed, or not an acknowledgement: nothing more to wait for
            self.unacked -= 1

    async def send_bytes(self, fd: int, offset: int, length: int) -> None:
        await self.send(_frame({"bytes": length}))
        end = offset + length
        while offset < end:
            data = await _io.run(os.pread, fd, min(READ_BYTES, end - offset), offset)
            if not data:
                raise ObjectNotFound(f"an object ended {end - offset} bytes early")
            offset += len(data)
            view = memoryview(data)
            for start in range(0, len(view), proto.DATA_BYTES):
                await self.send(view[start : start + proto.DATA_BYTES])


def _frame(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _error(err: PachError) -> dict[str, Any]:
    wire = to_wire(err)
    return {"type": wire["type"], "message": err.message}


def _parse(raw: bytes) -> tuple[str, str, str, str]:
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidArgument("a local read request must be one JSON object") from None
    if not isinstance(body, dict):
        raise InvalidArgument("a local read request must be one JSON object")
    if body.get("v") != proto.VERSION:
        raise InvalidArgument(
            f"local read protocol version {body.get('v')!r} is not {proto.VERSION}"
        )
    values = [body.get(name, "") for name in _FIELDS]
    for name, value in zip(_FIELDS, values, strict=True):
        if not isinstance(value, str):
            raise InvalidArgument(f"a local read request's {name} must be a string", field=name)
    token, repo, ref, path = values
    if not repo or not ref:
        raise InvalidArgument("a local read request names a repo and a commit or branch")
    if any(c in value for value in (repo, ref) for c in "/\x00"):
        raise InvalidArgument(f"bad repo or ref in a local read request: {repo!r} {ref!r}")
    return token, repo, ref, trees.normalize("/" + path.lstrip("/"))


def _open_all(paths: list[tuple[Path, str, int, int]]) -> list[tuple[int, bool]]:
    """Each object opened (read only, no symlink), and whether its range is
    all of it; on an error nothing stays open."""
    out: list[tuple[int, bool]] = []
    try:
        for path, key, offset, length in paths:
            try:
                fd = os.open(path, proto.open_flags())
            except (FileNotFoundError, NotADirectoryError):
                raise ObjectNotFound(key) from None
            except OSError as exc:  # ELOOP: a symbolic link where an object should be
                raise ObjectNotFound(f"{key}: {exc.strerror}") from None
            st = os.fstat(fd)
            out.append((fd, proto.whole_object(st, offset, length)))
            if not stat.S_ISREG(st.st_mode) or st.st_size < offset + length:
                raise ObjectNotFound(f"{key} holds fewer bytes than a ref to it needs")
    except BaseException:
        _close_all([fd for fd, _ in out])
        raise
    return out


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _own_private_dir(path: Path) -> None:
    """``path`` as a directory of this user's, open to nobody else."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise InvalidArgument(f"{path} is not a directory of this user's", path=str(path))
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
