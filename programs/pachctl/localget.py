"""get-file on the gateway's host: the gateway's local read socket hands
over the descriptors of the object files that hold the file, and the bytes
go from them to the output with ``sendfile`` inside the kernel (ranges of
packs shared with other files come as bytes). No gRPC is loaded when the
socket is known. See docs/decisions/0039-get-file-local-socket.md; the
protocol is ``libs/local_reads.py``.

Where the socket is: InspectFile's trailing metadata names it (and the
cluster's id) when the gateway serves one; pachctl keeps it in
``local-sockets.json`` beside its config file, keyed by ``PACHD_ADDRESS``.
A socket is used only when its first reply names that cluster and the
gRPC port pachctl was told to use, and its server runs as this user
(``SO_PEERCRED``): the token goes nowhere else. Anything short of a file to
read (no socket, a stale entry, an error reply) answers False with nothing
written, and the caller goes on as before (HTTP, then gRPC, which says what
is wrong). ``PACH_LOCAL_SOCKET=off`` never uses it."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from libs import local_reads as proto
from libs.errors import Unavailable
from programs.pachctl.address import Address
from programs.pachctl.config import config_path

ENV = "PACH_LOCAL_SOCKET"
OFF = frozenset({"off", "none", "no", "false", "0"})
CACHE_NAME = "local-sockets.json"
TIMEOUT_S = 300.0
READERS = 4  # threads reading a cold file's next object files meanwhile
READ_AHEAD = 16  # how many object files they may be ahead of the one being sent
_SENDFILE_MAX = 1 << 30
_COPY_BYTES = 1 << 20
_NO_SENDFILE = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF})

Write = Callable[[bytes | memoryview], object]


class LocalReadCut(Unavailable):
    """The local read ended before the file's last byte."""


def enabled(env: Mapping[str, str]) -> bool:
    return env.get(ENV, "").strip().lower() not in OFF


def cache_path(env: Mapping[str, str] | None = None) -> Path:
    return config_path(env).parent / CACHE_NAME


def cached(pachd: Address, env: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """The remembered (socket path, cluster id) for ``pachd``, if any."""
    try:
        text = cache_path(env).read_text()
    except OSError:
        return None
    import json

    try:
        entry = json.loads(text).get(pachd.target)
    except (ValueError, AttributeError):
        return None
    if isinstance(entry, dict):
        path, cluster = entry.get("socket"), entry.get("cluster")
        if isinstance(path, str) and isinstance(cluster, str) and path and cluster:
            return path, cluster
    return None


def remember(
    pachd: Address, entry: tuple[str, str] | None, env: Mapping[str, str] | None = None
) -> None:
    """Keep (or with None forget) ``pachd``'s socket; best effort, owner-only."""
    import json
    import tempfile

    path = cache_path(env)
    try:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = {}
        if not isinstance(data, dict):
            data = {}
        if entry is None:
            if data.pop(pachd.target, None) is None:
                return
        else:
            data[pachd.target] = {"socket": entry[0], "cluster": entry[1]}
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".local-sockets-")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        pass  # only a cache: the next get-file asks again


def advertised(metadata: object) -> tuple[str, str] | None:
    """(socket path, cluster id) from InspectFile's trailing metadata."""
    found: dict[str, str] = {}
    for key, value in metadata or ():  # type: ignore[attr-defined]
        if key in (proto.SOCKET_KEY, proto.CLUSTER_KEY) and isinstance(value, str):
            found[key] = value
    path, cluster = found.get(proto.SOCKET_KEY, ""), found.get(proto.CLUSTER_KEY, "")
    return (path, cluster) if path.startswith("/") and cluster else None


class _BadFrame(Exception):
    """A frame that does not fit the file (the read stops there)."""


class Mismatch(Exception):
    """The socket is not the cluster's at ``PACHD_ADDRESS`` (a stale entry)."""


def fetch(
    where: tuple[str, str],
    pachd: Address,
    token: str,
    repo: str,
    ref: str,
    path: str,
    out_fd: int | None,
    write: Write,
) -> bool:
    """Read the file into ``out_fd`` (``write`` when None). False, with
    nothing written, when the socket cannot serve it; ``Mismatch`` when it
    belongs to another cluster or port; ``LocalReadCut`` once started."""
    sock = _connect(where[0])
    if sock is None:
        return False
    with sock:
        import json

        request = {"v": proto.VERSION, "token": token, "repo": repo, "ref": ref, "path": path}
        try:
            sock.send(json.dumps(request).encode())
            head, fds = _recv_frame(sock)
        except OSError:
            return False
        _close(fds)
        if not head.get("ok"):
            return False  # an error: gRPC will say it
        if head.get("cluster") != where[1] or head.get("grpc_port") != pachd.port:
            raise Mismatch(f"{where[0]} serves another cluster or port")
        size = head.get("size")
        if not isinstance(size, int) or size < 0:
            return False
        got = _body(sock, size, out_fd, write)
        if got != size:
            raise LocalReadCut(
                f"the local read from {where[0]} ended after {got} of {size} bytes",
                got=got,
                size=size,
            )
    return True


def _connect(path: str) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    dfd: int | None = None
    try:
        address, dfd = proto.short_path(path)
        sock.settimeout(TIMEOUT_S)
        sock.connect(address)
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        if int.from_bytes(creds[4:8], sys.byteorder) != os.getuid():  # struct ucred.uid
            raise PermissionError("the socket's server runs as another user")
    except OSError:
        sock.close()
        return None
    finally:
        if dfd is not None:
            os.close(dfd)
    return sock


def _recv_frame(sock: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """One JSON frame and the descriptors it carries (closed on error)."""
    msg, fds, flags, _ = socket.recv_fds(sock, proto.MAX_HEADER, proto.FDS_PER_FRAME)
    try:
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or not msg:
            raise ConnectionError("a truncated or empty frame from the local read socket")
        import json

        body = json.loads(msg)
        if not isinstance(body, dict):
            raise ConnectionError("a frame that is not a JSON object")
    except BaseException:
        _close(fds)
        raise
    return body, fds


def _body(sock: socket.socket, size: int, out_fd: int | None, write: Write) -> int:
    """The frames after the first, written out; the bytes written. Stops at
    the end frame, an error frame or a closed connection."""
    got = 0
    while True:
        try:
            frame, fds = _recv_frame(sock)
        except (OSError, ValueError):
            return got
        try:
            if "fds" in frame:
                ranges = frame["fds"]
                if not isinstance(ranges, list) or len(ranges) != len(fds):
                    return got
                n, whole = _send_all(fds, ranges, out_fd, write, size - got)
                got += n
                if not whole:
                    return got
                with contextlib.suppress(OSError):  # gone after its last frame: read on
                    sock.send(proto.ACK)
            elif "bytes" in frame:
                n = frame["bytes"]
                if not isinstance(n, int) or n < 0 or n > size - got:
                    return got
                got += _recv_bytes(sock, n, out_fd, write)
            elif "error" in frame:  # after bytes were written: say why it stopped
                err = frame["error"]
                message = err.get("message") if isinstance(err, dict) else None
                raise LocalReadCut(
                    f"the local read stopped after {got} of {size} bytes: {message}",
                    got=got,
                    size=size,
                )
            else:
                return got  # the end
        except _BadFrame:
            return got
        finally:
            _close(fds)


def _send_all(
    fds: list[int], ranges: list[Any], out_fd: int | None, write: Write, left: int
) -> tuple[int, bool]:
    """Bytes sent, and whether every range was sent whole."""
    sent = 0
    checked: list[tuple[int, int]] = []
    for r in ranges:
        if not (isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) for x in r)):
            raise _BadFrame("a bad range in a frame")
        checked.append((r[0], r[1]))
    readers = None
    if out_fd is not None and len(fds) > 1 and not _cached(fds[0], *checked[0]):
        readers = _Readers(fds, checked)  # cold: read ahead in parallel
    try:
        for i, (fd, (offset, length)) in enumerate(zip(fds, checked, strict=True)):
            if length > left - sent or offset < 0 or length < 0:
                raise _BadFrame("a range past the file's size")
            if readers is not None:
                readers.sending(i)
            n = _send_range(fd, offset, length, out_fd, write)
            sent += n
            if n != length:
                return sent, False
    finally:
        if readers is not None:
            readers.close()
    return sent, True


def _cached(fd: int, offset: int, length: int) -> bool:
    """Whether the range's first and last bytes are in the page cache (a
    read of them would not wait for the disk)."""
    if length <= 0:
        return True
    buf = bytearray(1)
    try:
        for pos in (offset, offset + length - 1):
            os.preadv(fd, [buf], pos, os.RWF_NOWAIT)
    except BlockingIOError:
        return False
    except OSError:
        return True  # cannot tell: no reading ahead
    return True


class _Readers:
    """Threads that read the ranges after the one being sent into the page
    cache (``sendfile`` to /dev/null), at most ``READ_AHEAD`` ranges ahead:
    a few reads in flight keep a disk busier than one sequential reader
    (cold 1 GiB of 8 MiB chunks here: 0.6-0.9 GB/s alone, 1.0-1.3 GB/s with 3-4 readers).
    Ranges found in the page cache are skipped."""

    def __init__(self, fds: list[int], ranges: list[tuple[int, int]]) -> None:
        import threading  # only for a cold read

        self._fds = fds
        self._ranges = ranges
        self._cond = threading.Condition()
        self._sending = 0
        self._next = 1
        self._stop = False
        self._sink = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(READERS)]
        for thread in self._threads:
            thread.start()

    def sending(self, index: int) -> None:
        with self._cond:
            self._sending = index
            self._cond.notify_all()

    def _take(self) -> int | None:
        with self._cond:
            while not self._stop and self._next > self._sending + READ_AHEAD:
                self._cond.wait()
            if self._stop or self._next >= len(self._fds):
                return None
            index = self._next
            self._next += 1
            return index

    def _run(self) -> None:
        while (index := self._take()) is not None:
            fd, (offset, length) = self._fds[index], self._ranges[index]
            if _cached(fd, offset, length):
                continue
            done = 0
            try:
                while done < length and not self._stop:
                    n = os.sendfile(self._sink, fd, offset + done, min(length - done, 8 << 20))
                    if n == 0:
                        break
                    done += n
            except OSError:
                return  # only a read ahead: the sender reads it anyway

    def close(self) -> None:
        """Stop; the threads are gone (no read of a descriptor about to close)."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()
        os.close(self._sink)


def _send_range(fd: int, offset: int, length: int, out_fd: int | None, write: Write) -> int:
    """Bytes ``[offset, offset+length)`` of ``fd`` to the output: in the
    kernel with ``sendfile`` when it can, else read and written."""
    done = 0
    if out_fd is not None:
        while done < length:
            try:
                n = os.sendfile(out_fd, fd, offset + done, min(length - done, _SENDFILE_MAX))
            except OSError as exc:
                if exc.errno not in _NO_SENDFILE or done:
                    raise
                break  # an output sendfile cannot write to (a terminal, O_APPEND)
            if n == 0:
                return done
            done += n
    while done < length:
        data = os.pread(fd, min(_COPY_BYTES, length - done), offset + done)
        if not data:
            return done
        _write_out(out_fd, write, data)
        done += len(data)
    return done


def _recv_bytes(sock: socket.socket, n: int, out_fd: int | None, write: Write) -> int:
    got = 0
    while got < n:
        try:
            data = sock.recv(proto.DATA_BYTES)
        except OSError:
            return got
        if not data or len(data) > n - got:
            return got
        _write_out(out_fd, write, data)
        got += len(data)
    return got


def _write_out(out_fd: int | None, write: Write, data: bytes) -> None:
    if out_fd is None:
        write(data)
        return
    view = memoryview(data)
    while view:
        view = view[os.write(out_fd, view) :]


def _close(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
