"""get-file's fast path: one file's bytes over the gateway's HTTP download
(``GET /pfs/<repo>/<commit>/<path>``), which sends them from its chunk
files with ``sendfile``; here they go from the socket to the output with
``splice`` when it is a pipe, else with large ``recv_into`` reads written
straight to its descriptor. See
docs/decisions/0036-get-file-fast-path.md.

Where the download listens: ``PACH_HTTP_ADDRESS`` (``host:port``, or ``off``
for never), else the port the gateway advertises in InspectFile's trailing
metadata (only when it can send with ``sendfile``) on ``PACHD_ADDRESS``'s
host. ``fetch`` answers False, having written nothing, when the answer is
not the file InspectFile described (no listener, any error status, another
length or hash): the caller then reads it over gRPC. Once the body has
started, a connection that ends early is ``DownloadCut``, never a short
file."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable, Mapping
from urllib.parse import quote

from libs.errors import InvalidArgument, Unavailable
from programs.pachctl.address import Address, parse_address

ENV = "PACH_HTTP_ADDRESS"
OFF = frozenset({"off", "none", "no", "false", "0"})
HTTP_PORT_KEY = "pach-http-port"  # services/gateway/grpc/pfs.py
CONNECT_TIMEOUT_S = 5.0
HEAD_TIMEOUT_S = 60.0
MAX_HEAD = 64 << 10
PIPE_BYTES = 1 << 20  # per splice into a pipe
RECV_BYTES = 4 << 20

Write = Callable[[bytes | memoryview], object]


class DownloadCut(Unavailable):
    """The download ended before its last byte."""


def http_address(env: Mapping[str, str], pachd: Address, metadata: object) -> Address | None:
    """Where to fetch from: ``PACH_HTTP_ADDRESS``, else the advertised port
    (``metadata``: InspectFile's trailing metadata) on pachd's host; None for
    gRPC."""
    raw = env.get(ENV, "").strip()
    if raw.lower() in OFF and raw:
        return None
    if raw:
        try:
            return parse_address(raw)
        except InvalidArgument:
            raise InvalidArgument(
                f"{ENV} must be host:port, http://host:port or off, got {raw!r}", name=ENV
            ) from None
    for key, value in metadata or ():  # type: ignore[attr-defined]
        if key == HTTP_PORT_KEY and isinstance(value, str) and value.isdigit():
            port = int(value)
            return Address(pachd.host, port) if 0 < port < 65536 else None
    return None


def request_head(address: Address, repo: str, commit: str, path: str, token: str) -> bytes:
    """The GET request for one file pinned to ``commit`` (percent-encoded)."""
    target = "/pfs/{}/{}/{}".format(
        quote(repo, safe=""), quote(commit, safe=""), quote(path.lstrip("/"), safe="/")
    )
    lines = [f"GET {target} HTTP/1.1", f"Host: {address.target}", "Connection: close"]
    if token:
        if any(c in token for c in "\r\n"):
            raise InvalidArgument("the session token holds a line break")
        lines.append(f"authn-token: {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def parse_head(raw: bytes) -> tuple[int, dict[str, str]]:
    """``(status, headers)`` of an HTTP/1.x response head (without its
    blank line); header names in lower case. ValueError if it is not one."""
    lines = raw.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest.partition(" ")[0]
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise ValueError(f"not an HTTP/1 status line: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise ValueError(f"not an HTTP header line: {line[:80]!r}")
        headers[name.lower()] = value.strip()
    return int(code), headers


def fetch(
    address: Address,
    head: bytes,
    size: int,
    etag: str,
    out_fd: int | None,
    write: Write,
) -> bool:
    """Download into ``out_fd`` (or ``write`` when None). False, with nothing
    written, when the answer is not ``size`` bytes with ETag ``etag``."""
    try:
        sock = socket.create_connection((address.host, address.port), CONNECT_TIMEOUT_S)
    except OSError:
        return False
    with sock:
        sock.settimeout(HEAD_TIMEOUT_S)
        try:
            sock.sendall(head)
            status, headers, first = _read_head(sock)
        except (OSError, ValueError):
            return False
        if (
            status != 200
            or headers.get("content-length") != str(size)
            or headers.get("etag") != f'"{etag}"'
            or headers.get("transfer-encoding")
        ):
            return False
        sock.settimeout(None)  # blocking: splice and recv wait as long as the body takes
        got = len(first)
        if first:
            _write_out(out_fd, write, first)
        if out_fd is not None:
            got += _splice(sock.fileno(), out_fd, size - got)
        got += _recv(sock, out_fd, write, size - got)
        if got != size:
            raise DownloadCut(
                f"the download from {address} ended after {got} of {size} bytes", got=got, size=size
            )
    return True


def _read_head(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        if len(buf) > MAX_HEAD:
            raise ValueError("an HTTP response head over 64 KiB")
        data = sock.recv(MAX_HEAD)
        if not data:
            raise ValueError("the connection closed before the response head")
        buf += data
    raw, _, first = buf.partition(b"\r\n\r\n")
    status, headers = parse_head(raw)
    return status, headers, first


def _write_out(out_fd: int | None, write: Write, data: bytes | memoryview) -> None:
    if out_fd is None:
        write(data)
        return
    view = memoryview(data)
    while view:
        view = view[os.write(out_fd, view) :]


def _splice(sock_fd: int, out_fd: int, left: int) -> int:
    """Bytes moved from the socket into ``out_fd`` inside the kernel when it
    is a pipe (``| next-command``); 0 for any other output, which takes
    large reads (through an extra pipe, a file or /dev/null measured no
    faster). Stops early at the end of the stream."""
    if left <= 0 or not stat.S_ISFIFO(os.fstat(out_fd).st_mode):
        return 0
    moved = 0
    while moved < left:
        n = os.splice(sock_fd, out_fd, min(left - moved, PIPE_BYTES))
        if n == 0:
            break
        moved += n
    return moved


def _recv(sock: socket.socket, out_fd: int | None, write: Write, left: int) -> int:
    got = 0
    buf = bytearray(min(RECV_BYTES, max(left, 1)))
    view = memoryview(buf)
    while got < left:
        n = sock.recv_into(view, min(len(buf), left - got))
        if n == 0:
            break
        _write_out(out_fd, write, view[:n] if out_fd is not None else bytes(view[:n]))
        got += n
    return got
