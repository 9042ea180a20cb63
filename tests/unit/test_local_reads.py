"""The local read socket's pieces (docs/decisions/0039-get-file-local-socket.md):
which object may be passed as a descriptor, how objects are opened, how a
request is parsed, long socket paths, and pachctl's side of the protocol
(frames over a real socket pair, the output written with sendfile or not,
the cache of socket paths)."""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path

import pytest

from libs import local_reads as proto
from libs.errors import InvalidArgument, ObjectNotFound
from programs.pachctl import localget
from programs.pachctl.address import Address
from services.gateway.local.server import _Link, _open_all, _parse


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_only_a_whole_regular_object_may_be_passed(tmp_path: Path) -> None:
    f = tmp_path / "obj"
    f.write_bytes(b"x" * 100)
    st = os.stat(f)
    assert proto.whole_object(st, 0, 100)
    assert not proto.whole_object(st, 0, 99)  # a slice: the rest may be another file's
    assert not proto.whole_object(st, 1, 99)
    assert not proto.whole_object(st, 0, 101)
    assert not proto.whole_object(os.stat(tmp_path), 0, st.st_size)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert not proto.whole_object(os.stat(empty), 0, 0)


def test_objects_open_read_only_never_through_a_link_and_leak_nothing(tmp_path: Path) -> None:
    whole, pack = tmp_path / "whole", tmp_path / "pack"
    whole.write_bytes(b"a" * 10)
    pack.write_bytes(b"b" * 30)
    before = _open_fds()
    opened = _open_all([(whole, "w", 0, 10), (pack, "p", 10, 10)])
    try:
        assert [w for _, w in opened] == [True, False]
        for fd, _ in opened:
            with pytest.raises(OSError):
                os.write(fd, b"z")
    finally:
        for fd, _ in opened:
            os.close(fd)
    (tmp_path / "link").symlink_to(whole)
    with pytest.raises(ObjectNotFound):
        _open_all([(whole, "w", 0, 10), (tmp_path / "link", "l", 0, 10)])
    with pytest.raises(ObjectNotFound):  # a ref past the object's end
        _open_all([(whole, "w", 0, 10), (pack, "p", 25, 10)])
    with pytest.raises(ObjectNotFound):
        _open_all([(tmp_path / "missing", "m", 0, 1)])
    assert _open_fds() == before


def test_requests_are_parsed_strictly() -> None:
    good = {"v": 1, "token": "t", "repo": "r", "ref": "master", "path": "a/b"}
    assert _parse(json.dumps(good).encode()) == ("t", "r", "master", "/a/b")
    bad = [
        b"",
        b"garbage",
        b"[]",
        b"\xff",
        b"[" * 100_000,
        json.dumps({**good, "v": 2}).encode(),
        json.dumps({**good, "repo": 1}).encode(),
        json.dumps({**good, "repo": ""}).encode(),
        json.dumps({**good, "ref": "../x"}).encode(),
        json.dumps({**good, "repo": "a/b"}).encode(),
        json.dumps({**good, "path": "/a/../../b"}).encode(),
        json.dumps({**good, "path": "a\x00b"}).encode(),
    ]
    for raw in bad:
        with pytest.raises(InvalidArgument):
            _parse(raw)


def test_a_long_socket_path_binds_and_connects_through_its_directory(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = str(deep / "s.sock")
    address, dfd = proto.short_path(path)
    assert dfd is not None and len(address) < proto.MAX_SUN_PATH
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as server:
        server.bind(address)
        os.close(dfd)
        server.listen(1)
        client = localget._connect(path)  # the same way, and this user's server
        assert client is not None
        client.close()
    assert localget._connect(str(tmp_path / "nothing.sock")) is None


def _serve(frames: list[tuple[bytes, list[int]]]) -> tuple[socket.socket, threading.Thread]:
    """pachctl's end of a socket pair whose other end sends ``frames`` and
    reads the acknowledgements."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)

    def run() -> None:
        with theirs:
            for data, fds in frames:
                if fds:
                    socket.send_fds(theirs, [data], fds)
                else:
                    theirs.send(data)
            # as the gateway does: a close with an acknowledgement unread
            # would reset pachctl's end before it read the last frames
            for _ in range(sum(1 for _, fds in frames if fds)):
                if not theirs.recv(16):
                    break

    thread = threading.Thread(target=run)
    thread.start()
    return ours, thread


def _frame(body: dict[str, object]) -> bytes:
    return json.dumps(body).encode()


def test_frames_become_the_file_in_order(tmp_path: Path) -> None:
    chunk = tmp_path / "chunk"
    chunk.write_bytes(b"C" * 5000)
    fd = os.open(chunk, os.O_RDONLY)
    frames = [
        (_frame({"bytes": 3}), []),
        (b"abc", []),
        (_frame({"fds": [[0, 5000]]}), [fd]),
        (_frame({"bytes": 2}), []),
        (b"yz", []),
        (_frame({"end": True}), []),
    ]
    want = b"abc" + b"C" * 5000 + b"yz"
    for target in ("file", "pipe", "append", "write"):
        sock, thread = _serve(frames)
        out = tmp_path / f"out-{target}"
        with sock:
            if target == "write":
                got = bytearray()
                n = localget._body(sock, len(want), None, got.extend)
                assert bytes(got) == want
            elif target == "pipe":
                r, w = os.pipe()
                n = localget._body(sock, len(want), w, print)
                os.close(w)
                assert os.read(r, 1 << 20) == want
                os.close(r)
            else:  # sendfile cannot write to an O_APPEND file: read and written
                flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if target == "append" else 0)
                wfd = os.open(out, flags)
                n = localget._body(sock, len(want), wfd, print)
                os.close(wfd)
                assert out.read_bytes() == want
        thread.join()
        assert n == len(want), target
    os.close(fd)


def test_a_frame_promising_more_than_the_file_stops_the_read(tmp_path: Path) -> None:
    chunk = tmp_path / "chunk"
    chunk.write_bytes(b"C" * 100)
    fd = os.open(chunk, os.O_RDONLY)
    cases: list[list[tuple[bytes, list[int]]]] = [
        [(_frame({"fds": [[0, 100]]}), [fd])],  # 100 > 50
        [(_frame({"bytes": 60}), [])],
        [(_frame({"fds": [[0, 10], [10, 10]]}), [fd])],  # two ranges, one descriptor
        [(b"not json", [])],
    ]
    for frames in cases:
        before = _open_fds()
        sock, thread = _serve(frames)
        with sock:
            got = bytearray()
            assert localget._body(sock, 50, None, got.extend) == 0
        thread.join()
        assert got == b"" and _open_fds() <= before
    os.close(fd)


def test_the_socket_cache_round_trips_and_survives_damage(tmp_path: Path) -> None:
    env = {"PACH_CONFIG": str(tmp_path / "cfg" / "config.json")}
    pachd = Address("127.0.0.1", 30650)
    assert localget.cached(pachd, env) is None
    localget.remember(pachd, ("/x/run/gateway-30650.sock", "cid"), env)
    assert localget.cached(pachd, env) == ("/x/run/gateway-30650.sock", "cid")
    assert localget.cached(Address("127.0.0.1", 1), env) is None
    assert os.stat(tmp_path / "cfg").st_mode & 0o077 == 0
    localget.remember(pachd, None, env)
    assert localget.cached(pachd, env) is None
    localget.cache_path(env).write_text("[1, 2")
    assert localget.cached(pachd, env) is None
    localget.remember(pachd, ("/s", "c"), env)  # a damaged cache is replaced
    assert localget.cached(pachd, env) == ("/s", "c")


def test_only_a_full_advertisement_is_taken() -> None:
    sock, cid = (proto.SOCKET_KEY, "/d/run/g.sock"), (proto.CLUSTER_KEY, "c1")
    assert localget.advertised((sock, cid, ("pach-http-port", "1"))) == ("/d/run/g.sock", "c1")
    assert localget.advertised((sock,)) is None
    assert localget.advertised(((proto.SOCKET_KEY, "relative.sock"), cid)) is None
    assert localget.advertised(None) is None
    assert localget.enabled({}) and not localget.enabled({"PACH_LOCAL_SOCKET": "off"})


def test_a_cold_frame_is_read_ahead_and_still_sent_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = [_unique_block(i) for i in range(12)]
    fds = []
    for i, part in enumerate(parts):
        path = tmp_path / f"c{i}"
        path.write_bytes(part)
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        fds.append(fd)
    started: list[int] = []
    real = localget._Readers

    class Counting(real):  # type: ignore[misc,valid-type]
        def __init__(self, fds: list[int], ranges: list[tuple[int, int]]) -> None:
            started.append(len(fds))
            super().__init__(fds, ranges)

    monkeypatch.setattr(localget, "_Readers", Counting)
    out = tmp_path / "out"
    wfd = os.open(out, os.O_WRONLY | os.O_CREAT)
    ranges = [[0, len(p)] for p in parts]
    threads = threading.active_count()
    try:
        sent, whole = localget._send_all(fds, ranges, wfd, print, 1 << 30)
    finally:
        os.close(wfd)
        for fd in fds:
            os.close(fd)
    assert whole and sent == sum(len(p) for p in parts)
    assert out.read_bytes() == b"".join(parts)
    assert started == [12]  # dropped from the page cache: read ahead
    assert threading.active_count() == threads  # the readers are gone


def _unique_block(i: int) -> bytes:
    return bytes([i]) * (256 << 10) + i.to_bytes(8, "big")


def test_an_error_after_bytes_says_why_and_a_closed_output_is_not_a_cut(tmp_path: Path) -> None:
    frames: list[tuple[bytes, list[int]]] = [
        (_frame({"bytes": 2}), []),
        (b"ab", []),
        (_frame({"error": {"type": "ObjectNotFound", "message": "object x not found"}}), []),
    ]
    sock, thread = _serve(frames)
    with sock, pytest.raises(localget.LocalReadCut, match="after 2 of 10 bytes: object x"):
        localget._body(sock, 10, None, bytearray().extend)
    thread.join()
    chunk = tmp_path / "chunk"
    chunk.write_bytes(b"C" * (1 << 20))
    fd = os.open(chunk, os.O_RDONLY)
    sock, thread = _serve([(_frame({"fds": [[0, 1 << 20]]}), [fd])])
    r, w = os.pipe()
    os.close(r)  # the reader went away (| head)
    with sock, pytest.raises(BrokenPipeError):
        localget._body(sock, 1 << 20, w, print)
    thread.join()
    os.close(w)
    os.close(fd)


async def test_the_gateway_reads_every_acknowledgement_before_it_closes() -> None:
    # a Unix socket closed with an unread message resets its peer, which then
    # loses the frames it has not read yet: the end frame, the last bytes
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.setblocking(False)
    link = _Link(theirs)
    chunk = os.open(__file__, os.O_RDONLY)
    try:
        await link.send_fds([(chunk, 0, 1)])
        await link.send(b'{"end":true}')
        head, fds = socket.recv_fds(ours, 1024, 1)[:2]
        assert b"fds" in head and len(fds) == 1
        os.close(fds[0])
        ours.send(proto.ACK)
        await link.drain_acks(5)
        theirs.close()
        assert link.unacked == 0
        assert ours.recv(1024) == b'{"end":true}'  # not reset
    finally:
        os.close(chunk)
        ours.close()
