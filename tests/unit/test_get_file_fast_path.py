"""The pieces of get-file's fast path on their own: pachctl's HTTP request
and response head, where it fetches from, the body copied into a pipe, a
file and a callable; and ``SocketSink`` sending object files to a real
socket (a slow reader, a short object, ranges)."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from libs.errors import Internal, InvalidArgument, ObjectNotFound
from libs.objects.sendfile import SocketSink
from programs.pachctl import fastget
from programs.pachctl.address import Address

PACHD = Address("pachd.example", 30650)


def test_http_address_env_then_advertised_then_none() -> None:
    advertised = (("other", "1"), ("pach-http-port", "30080"))
    assert fastget.http_address({}, PACHD, advertised) == Address("pachd.example", 30080)
    env = {"PACH_HTTP_ADDRESS": "http://10.0.0.1:9000"}
    assert fastget.http_address(env, PACHD, advertised) == Address("10.0.0.1", 9000)
    for off in ("off", "OFF", "none", "0"):
        assert fastget.http_address({"PACH_HTTP_ADDRESS": off}, PACHD, advertised) is None
    assert fastget.http_address({}, PACHD, ()) is None  # a 1.7 pachd, a non-local store
    assert fastget.http_address({}, PACHD, None) is None
    assert fastget.http_address({}, PACHD, (("pach-http-port", "x"),)) is None
    assert fastget.http_address({}, PACHD, (("pach-http-port", "70000"),)) is None
    with pytest.raises(InvalidArgument, match="PACH_HTTP_ADDRESS"):
        fastget.http_address({"PACH_HTTP_ADDRESS": "nope"}, PACHD, advertised)


def test_request_head_encodes_the_path_and_carries_the_token() -> None:
    head = fastget.request_head(Address("::1", 8080), "r", "abc", "/a b/c#d%.txt", "tok")
    lines = head.decode().split("\r\n")
    assert lines[0] == "GET /pfs/r/abc/a%20b/c%23d%25.txt HTTP/1.1"
    assert "Host: [::1]:8080" in lines and "authn-token: tok" in lines
    assert head.endswith(b"\r\n\r\n")
    assert b"authn-token" not in fastget.request_head(PACHD, "r", "c", "/f", "")
    with pytest.raises(InvalidArgument):
        fastget.request_head(PACHD, "r", "c", "/f", "tok\r\nX-Evil: 1")


def test_parse_head() -> None:
    raw = b'HTTP/1.1 200 OK\r\nContent-Length: 12\r\nETag: "ab"\r\nX-Empty:'
    assert fastget.parse_head(raw) == (200, {"content-length": "12", "etag": '"ab"', "x-empty": ""})
    assert fastget.parse_head(b"HTTP/1.0 404 Not Found")[0] == 404
    for bad in (b"SSH-2.0-OpenSSH", b"HTTP/1.1 2000 OK", b"HTTP/1.1 200 OK\r\nno colon"):
        with pytest.raises(ValueError):
            fastget.parse_head(bad)


class _Server:
    """Answers one request with ``answer``, sent in pieces."""

    def __init__(self, answer: bytes) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = Address("127.0.0.1", self.sock.getsockname()[1])
        self.answer = answer
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.recv(65536)
            for i in range(0, len(self.answer), 100_000):
                conn.sendall(self.answer[i : i + 100_000])


def _answer(body: bytes, etag: str = "ff", length: int | None = None) -> bytes:
    n = len(body) if length is None else length
    return f'HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nETag: "{etag}"\r\n\r\n'.encode() + body


def test_fetch_into_a_pipe_a_file_and_a_callable(tmp_path: Path) -> None:
    body = os.urandom(3 * 1024 * 1024 + 17)
    head = fastget.request_head(PACHD, "r", "c", "/f", "")
    # a file (large reads written to its descriptor)
    out = tmp_path / "out"
    with open(out, "wb") as f:
        assert fastget.fetch(
            _Server(_answer(body)).address, head, len(body), "ff", f.fileno(), f.write
        )
    assert out.read_bytes() == body
    # a file opened to append
    with open(out, "ab") as f:
        assert fastget.fetch(
            _Server(_answer(body)).address, head, len(body), "ff", f.fileno(), f.write
        )
    assert out.read_bytes() == body + body
    # a pipe (spliced straight in)
    r, w = os.pipe()
    got = bytearray()

    def drain() -> None:
        while data := os.read(r, 65536):
            got.extend(data)

    reader = threading.Thread(target=drain)
    reader.start()
    assert fastget.fetch(_Server(_answer(body)).address, head, len(body), "ff", w, lambda b: None)
    os.close(w)
    reader.join()
    os.close(r)
    assert bytes(got) == body
    # no descriptor: recv_into and the callable
    parts: list[bytes | memoryview] = []
    assert fastget.fetch(_Server(_answer(body)).address, head, len(body), "ff", None, parts.append)
    assert b"".join(bytes(p) for p in parts) == body


def test_fetch_declines_another_answer_and_fails_a_cut_body(tmp_path: Path) -> None:
    head = fastget.request_head(PACHD, "r", "c", "/f", "")
    body = b"x" * 1000
    written: list[bytes | memoryview] = []
    for answer in (
        _answer(body, etag="other"),  # another file
        _answer(body[:10]),  # another length
        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\n{}",
        b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
    ):
        assert not fastget.fetch(_Server(answer).address, head, 1000, "ff", None, written.append)
    assert written == []
    closed = socket.create_server(("127.0.0.1", 0))
    nobody = Address("127.0.0.1", closed.getsockname()[1])
    closed.close()
    assert not fastget.fetch(nobody, head, 1000, "ff", None, written.append)
    with open(tmp_path / "cut", "wb") as f, pytest.raises(fastget.DownloadCut, match="500 of 1000"):
        fastget.fetch(
            _Server(_answer(body[:500], length=1000)).address, head, 1000, "ff", f.fileno(), f.write
        )


async def _serve_with_sink(
    ranges: list[tuple[Path, int, int]], reader_delay: float
) -> tuple[bytes, BaseException | None]:
    failure: list[BaseException] = []

    async def handle(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sink = SocketSink(writer.transport)  # type: ignore[arg-type]
        try:
            for path, offset, length in ranges:
                await sink.send(path, path.name, offset, length)
        except Exception as exc:
            failure.append(exc)
        finally:
            sink.close()
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    def read() -> bytes:
        got = bytearray()
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            while data := s.recv(65536):
                got += data
                if reader_delay:
                    time.sleep(reader_delay)
        return bytes(got)

    try:
        got = await asyncio.to_thread(read)
    finally:
        server.close()
    return got, failure[0] if failure else None


async def test_socket_sink_sends_ranges_to_a_slow_reader(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(os.urandom(3 * 1024 * 1024))
    b.write_bytes(os.urandom(100_000))
    ranges = [(a, 5, 2 * 1024 * 1024), (b, 0, 100_000), (a, 3 * 1024 * 1024 - 1, 1)]
    got, failure = await _serve_with_sink(ranges, reader_delay=0.03)  # > STALL_S
    assert failure is None
    want = a.read_bytes()[5 : 5 + 2 * 1024 * 1024] + b.read_bytes() + a.read_bytes()[-1:]
    assert got == want


async def test_socket_sink_refuses_a_short_or_missing_object(tmp_path: Path) -> None:
    a = tmp_path / "a"
    a.write_bytes(b"0123456789")
    got, failure = await _serve_with_sink([(a, 0, 4), (a, 5, 6)], reader_delay=0)
    assert got == b"0123" and isinstance(failure, Internal)
    got, failure = await _serve_with_sink([(tmp_path / "gone", 0, 4)], reader_delay=0)
    assert got == b"" and isinstance(failure, ObjectNotFound)


def test_pachctl_knows_the_glob_characters_the_download_expands() -> None:
    from libs.trees.glob import is_glob
    from programs.pachctl.commands.file import GLOB_SPECIAL

    assert all(is_glob(c) for c in GLOB_SPECIAL)
    assert [c for c in map(chr, range(32, 127)) if is_glob(c)] == sorted(GLOB_SPECIAL)


def _open_on(path: Path) -> int:
    fds = Path("/proc/self/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            count += os.readlink(fd) == str(path)
        except OSError:
            continue
    return count


async def test_a_send_cancelled_while_the_reader_stalls_leaves_no_file_open(
    tmp_path: Path,
) -> None:
    a = tmp_path / "a"
    a.write_bytes(os.urandom(16 * 1024 * 1024))
    started = asyncio.Event()
    sending: list[asyncio.Task[None]] = []

    async def handle(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sink = SocketSink(writer.transport)  # type: ignore[arg-type]
        sending.append(asyncio.current_task())  # type: ignore[arg-type]
        started.set()
        try:
            await sink.send(a, "a", 0, 16 * 1024 * 1024)
        finally:
            sink.close()
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    with socket.create_connection(("127.0.0.1", port)):  # never reads
        await started.wait()
        await asyncio.sleep(0.3)  # the socket is full: the send waits
        assert _open_on(a) == 1
        sending[0].cancel()
        await asyncio.gather(*sending, return_exceptions=True)
        for _ in range(50):
            if not _open_on(a):
                break
            await asyncio.sleep(0.02)
        assert _open_on(a) == 0
    server.close()
