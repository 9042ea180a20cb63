"""get-file through the gateway's same-host read socket (docs/decisions/
0039-get-file-local-socket.md) against a real cluster: InspectFile
advertises it, pachctl learns it and then reads without loading gRPC, the
bytes are the file's, whole chunk files come as read-only descriptors and a
pack shared with another file only as bytes; stale or foreign cache entries
fall back silently, a cut read is a one-line error with no half file, the
socket survives garbage; with auth active it refuses exactly what the
download refuses, and a pack shared with an unreadable repo never leaves
its descriptor. The last test activates auth: it runs last."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.empty_pb2 import Empty

from libs import local_reads as proto
from libs.api.admin import admin_pb2_grpc
from libs.api.auth import auth_pb2 as auth
from libs.api.enterprise import enterprise_pb2 as ent
from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from libs.errors import (
    InvalidArgument,
    NotFound,
    PachError,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    from_wire,
)
from tests.integration.auth_support import Client, code, write_keys
from tests.support.cluster import ROOT, Cluster, running

MiB = 1 << 20
CHUNK = 8 * MiB


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(tmp_path_factory.mktemp("localget"))


@pytest.fixture(scope="module")
def keys(base: Path) -> tuple[Path, Path]:
    return write_keys(base)


@pytest.fixture(scope="module")
def cluster(base: Path, keys: tuple[Path, Path]) -> Iterator[Cluster]:
    yield from running(base / "data", PACH_ENTERPRISE_PUBLIC_KEY=str(keys[1]))


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> Iterator[pfs_pb2_grpc.APIStub]:
    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        yield pfs_pb2_grpc.APIStub(channel)


@pytest.fixture(scope="module")
def cluster_id(cluster: Cluster) -> str:
    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        return str(admin_pb2_grpc.APIStub(channel).InspectCluster(Empty(), timeout=10).id)


def _sock_path(cluster: Cluster) -> Path:
    return cluster.data_dir / "run" / f"gateway-{cluster.grpc_port}.sock"


def _unique(n: int, salt: int = 0) -> bytes:
    return b"".join((salt << 40 | i).to_bytes(8, "big") for i in range(n // 8 + 1))[:n]


def _put(
    api: pfs_pb2_grpc.APIStub,
    files: dict[tuple[str, str], bytes],
    meta: tuple[tuple[str, str], ...] | list[tuple[str, str]] = (),
) -> None:
    """One PutFile stream (one put session, one pack for its small files)."""

    def requests() -> Iterator[pfs.PutFileRequest]:
        for (repo, path), data in files.items():
            commit = pfs.Commit(repo=pfs.Repo(name=repo), id="master")
            yield pfs.PutFileRequest(file=pfs.File(commit=commit, path=path))
            for i in range(0, len(data), MiB):
                yield pfs.PutFileRequest(value=data[i : i + MiB])

    api.PutFile(requests(), timeout=120, metadata=tuple(meta))


def _env(cluster: Cluster, config: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PACHD_ADDRESS": f"127.0.0.1:{cluster.grpc_port}",
        "PYTHONPATH": str(ROOT),
        "PACH_CONFIG": str(config),
        **extra,
    }
    for name in ("PACH_HTTP_ADDRESS", "PACH_LOCAL_SOCKET"):
        if name not in extra:
            env.pop(name, None)
    return env


def _pachctl(
    cluster: Cluster, config: Path, *args: str, importtime: bool = False, **extra: str
) -> subprocess.CompletedProcess[bytes]:
    pre = ["-X", "importtime"] if importtime else []
    return subprocess.run(
        [sys.executable, *pre, "-m", "programs.pachctl", *args],
        cwd=ROOT,
        env=_env(cluster, config, **extra),
        capture_output=True,
        timeout=120,
    )


def _loaded(stderr: bytes) -> set[str]:
    return {
        line.rpartition("|")[2].strip()
        for line in stderr.decode().splitlines()
        if line.startswith("import time:")
    }


def _cache(config: Path) -> dict[str, Any]:
    path = config.parent / "local-sockets.json"
    return json.loads(path.read_text()) if path.exists() else {}


class Reply:
    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.fd_flags: list[int] = []
        self.fd_sizes: list[int] = []
        self.data = b""

    @property
    def error(self) -> PachError | None:
        for frame in self.frames:
            if "error" in frame:
                return from_wire(frame["error"])
        return None


def _ask(cluster: Cluster, raw: bytes) -> Reply:
    """One raw request to the socket; the frames, the bytes they carry and
    what the descriptors passed were (access mode, size)."""
    out = Reply()
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
        sock.settimeout(30)
        sock.connect(str(_sock_path(cluster)))
        sock.send(raw)
        while True:
            msg, fds, _, _ = socket.recv_fds(sock, proto.MAX_HEADER, proto.FDS_PER_FRAME)
            if not msg:
                return out
            frame = json.loads(msg)
            out.frames.append(frame)
            if "fds" in frame:
                for fd, (offset, length) in zip(fds, frame["fds"], strict=True):
                    out.fd_flags.append(fcntl.fcntl(fd, fcntl.F_GETFL))
                    out.fd_sizes.append(os.fstat(fd).st_size)
                    out.data += os.pread(fd, length, offset)
                    os.close(fd)
                with contextlib.suppress(OSError):  # it may be done and gone
                    sock.send(proto.ACK)
            elif "bytes" in frame:
                got = b""
                while len(got) < frame["bytes"]:
                    got += sock.recv(proto.DATA_BYTES)
                out.data += got
            elif "end" in frame or "error" in frame:
                return out


def _request(repo: str, ref: str, path: str, token: str = "") -> bytes:
    body = {"v": 1, "token": token, "repo": repo, "ref": ref, "path": path}
    return json.dumps(body).encode()


def test_inspect_file_advertises_a_private_socket(
    cluster: Cluster, api: pfs_pb2_grpc.APIStub, cluster_id: str
) -> None:
    api.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name="adv")), timeout=10)
    _put(api, {("adv", "/f"): b"x"})
    file = pfs.File(commit=pfs.Commit(repo=pfs.Repo(name="adv"), id="master"), path="/f")
    _, call = api.InspectFile.with_call(pfs.InspectFileRequest(file=file), timeout=10)
    meta = dict(call.trailing_metadata())
    assert meta["pach-local-socket"] == str(_sock_path(cluster))
    assert meta["pach-cluster-id"] == cluster_id
    st = os.lstat(_sock_path(cluster))
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(os.lstat(_sock_path(cluster).parent).st_mode) == 0o700


def test_pachctl_learns_the_socket_then_reads_without_grpc(
    cluster: Cluster, api: pfs_pb2_grpc.APIStub, base: Path, cluster_id: str
) -> None:
    api.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name="bytes")), timeout=10)
    files = {
        "/empty": b"",
        "/one": b"1",
        "/small": _unique(70_001, 1),  # packed with the others: bytes
        "/under": _unique(CHUNK - 1, 2),
        "/exact": _unique(CHUNK, 3),
        "/over": _unique(CHUNK + 1, 4),
        "/many": _unique(5 * CHUNK + 12_345, 5),
        "/dir/name with space#%.bin": _unique(3000, 6),
    }
    _put(api, {("bytes", p): d for p, d in files.items()})
    config = base / "learn" / "config.json"
    # First: InspectFile over gRPC names the socket; the bytes come from it
    # (it is remembered only after a read from it succeeded).
    done = _pachctl(cluster, config, "get-file", "bytes", "master", "/many")
    assert done.returncode == 0 and done.stdout == files["/many"], done.stderr
    key = f"127.0.0.1:{cluster.grpc_port}"
    assert _cache(config)[key] == {"socket": str(_sock_path(cluster)), "cluster": cluster_id}
    out = base / "learn" / "out.bin"
    for path, data in files.items():
        done = _pachctl(cluster, config, "get-file", "bytes", "master", path, importtime=True)
        assert done.returncode == 0 and done.stdout == data, (path, done.stderr[-500:])
        assert "grpc" not in _loaded(done.stderr), path  # not a byte over gRPC
        done = _pachctl(cluster, config, "get-file", "bytes", "master", path, "-o", str(out))
        assert done.returncode == 0 and out.read_bytes() == data, path
    # Piped on: sendfile into a pipe.
    shell = f"{sys.executable} -m programs.pachctl get-file bytes master /over | cat"
    piped = subprocess.run(
        shell, shell=True, cwd=ROOT, env=_env(cluster, config), capture_output=True, timeout=60
    )
    assert piped.returncode == 0 and piped.stdout == files["/over"]
    # Whole chunks go as read-only descriptors; the packed file as bytes.
    big = _ask(cluster, _request("bytes", "master", "/many"))
    assert big.error is None and big.data == files["/many"]
    assert len(big.fd_flags) == 6 and all(f & os.O_ACCMODE == os.O_RDONLY for f in big.fd_flags)
    small = _ask(cluster, _request("bytes", "master", "/small"))
    assert small.error is None and small.data == files["/small"]
    assert small.fd_flags == [] and any("bytes" in f for f in small.frames)
    head = small.frames[0]
    assert head["ok"] and head["size"] == len(files["/small"]) and len(head["commit"]) == 32


def test_stale_or_foreign_cache_entries_fall_back_and_are_refreshed(
    cluster: Cluster, api: pfs_pb2_grpc.APIStub, base: Path, cluster_id: str
) -> None:
    api.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name="stale")), timeout=10)
    data = _unique(CHUNK + 5, 7)
    _put(api, {("stale", "/f"): data})
    config = base / "stale" / "config.json"
    config.parent.mkdir()
    key = f"127.0.0.1:{cluster.grpc_port}"
    real = {"socket": str(_sock_path(cluster)), "cluster": cluster_id}
    for entry in (
        {"socket": str(base / "stale" / "gone.sock"), "cluster": cluster_id},  # nothing there
        {"socket": real["socket"], "cluster": "another-cluster"},  # not this cluster
        {"socket": "/etc/passwd", "cluster": cluster_id},  # not a socket
    ):
        (config.parent / "local-sockets.json").write_text(json.dumps({key: entry}))
        done = _pachctl(cluster, config, "get-file", "stale", "master", "/f")
        assert done.returncode == 0 and done.stdout == data, (entry, done.stderr)
        assert done.stderr == b""
        assert _cache(config)[key] == real, entry
    (config.parent / "local-sockets.json").write_text("{not json")
    done = _pachctl(cluster, config, "get-file", "stale", "master", "/f")
    assert done.returncode == 0 and done.stdout == data and _cache(config)[key] == real


class FakeSocket:
    """A socket server that answers every request with ``frames`` (and
    counts the connections)."""

    def __init__(self, path: Path, frames: list[bytes]) -> None:
        self.path = path
        self.frames = frames
        self.connections = 0
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.server.bind(str(path))
        self.server.listen(4)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            with conn, contextlib.suppress(OSError):
                conn.recv(proto.MAX_REQUEST)
                for frame in self.frames:
                    conn.send(frame)

    def close(self) -> None:
        self.server.close()


def test_a_cut_read_is_one_line_and_leaves_no_half_file(
    cluster: Cluster, api: pfs_pb2_grpc.APIStub, base: Path, cluster_id: str
) -> None:
    work = base / "cut"
    work.mkdir()
    config = work / "config.json"
    key = f"127.0.0.1:{cluster.grpc_port}"
    head = {"ok": True, "cluster": cluster_id, "grpc_port": cluster.grpc_port}
    head |= {"commit": "c" * 32, "size": 100_000, "hash": ""}
    frames = [json.dumps(head).encode(), b'{"bytes":1000}', b"x" * 1000]  # then closes
    fake = FakeSocket(work / "fake.sock", frames)
    try:
        (work / "local-sockets.json").write_text(
            json.dumps({key: {"socket": str(fake.path), "cluster": cluster_id}})
        )
        out = work / "out.bin"
        done = _pachctl(cluster, config, "get-file", "any", "master", "/f", "-o", str(out))
        assert done.returncode == 1
        err = done.stderr.decode()
        assert err.count("\n") == 1 and "ended after 1000 of 100000 bytes" in err, err
        assert out.read_bytes() == b""  # no half file
        done = _pachctl(cluster, config, "get-file", "any", "master", "/f")
        assert done.returncode == 1 and len(done.stdout) == 1000
        # Switched off: the socket is never asked.
        before = fake.connections
        done = _pachctl(cluster, config, "get-file", "any", "master", "/f", PACH_LOCAL_SOCKET="off")
        assert done.returncode == 1 and fake.connections == before
        assert b"not found" in done.stderr.lower()
    finally:
        fake.close()


def test_the_socket_survives_garbage_and_refuses_bad_requests(
    cluster: Cluster, api: pfs_pb2_grpc.APIStub
) -> None:
    api.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name="odd")), timeout=10)
    data = _unique(CHUNK * 2, 8)
    _put(api, {("odd", "/f"): data, ("odd", "/d/g"): b"g"})
    cases: dict[bytes, type[PachError]] = {
        b"not json at all": InvalidArgument,
        b"[1, 2]": InvalidArgument,
        b"\xff\xfe": InvalidArgument,
        b"[" * 50_000: InvalidArgument,  # nested too deep
        json.dumps(
            {"v": 99, "repo": "odd", "ref": "master", "path": "/f"}
        ).encode(): InvalidArgument,
        json.dumps({"v": 1, "repo": "odd", "ref": "master", "path": 5}).encode(): InvalidArgument,
        b"x" * (proto.MAX_REQUEST + 10): InvalidArgument,  # over the limit
        _request("odd", "master", "/../f"): InvalidArgument,
        _request("odd", "master", "/d/../../f"): InvalidArgument,
        _request("odd", "../odd", "/f"): InvalidArgument,
        _request("odd/../odd", "master", "/f"): InvalidArgument,
        _request("odd", "master", "/d"): InvalidArgument,  # a directory
        _request("odd", "master", "/nope"): NotFound,
        _request("odd", "nosuchbranch", "/f"): NotFound,
        _request("nosuchrepo", "master", "/f"): NotFound,
    }
    for raw, kind in cases.items():
        reply = _ask(cluster, raw)
        assert isinstance(reply.error, kind), (raw[:60], reply.frames)
        assert len(reply.frames) == 1 and reply.data == b"" and reply.fd_flags == []
        assert "\n" not in reply.frames[0]["error"]["message"]
    # Descriptors sent to it, a silent client, a client gone mid-read.
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
        sock.connect(str(_sock_path(cluster)))
        with open(os.devnull, "rb") as f:
            socket.send_fds(sock, [_request("odd", "master", "/f")], [f.fileno()])
        msg, _, _, _ = socket.recv_fds(sock, proto.MAX_HEADER, proto.FDS_PER_FRAME)
        assert json.loads(msg)["ok"]
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
        sock.connect(str(_sock_path(cluster)))
    # More connections than it serves at once: one over is told so.
    idle = []
    try:
        for _ in range(70):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            s.connect(str(_sock_path(cluster)))  # blocking: waits for a full backlog
            s.settimeout(10)
            idle.append(s)
        refused = 0
        for s in idle[64:]:
            msg = s.recv(proto.MAX_HEADER)
            refused += isinstance(from_wire(json.loads(msg)["error"]), ResourceExhausted)
        assert refused == len(idle) - 64
    finally:
        for s in idle:
            s.close()
    good = _ask(cluster, _request("odd", "master", "/f"))
    assert good.error is None and good.data == data


def test_under_auth_the_socket_refuses_what_the_download_refuses(
    cluster: Cluster, keys: tuple[Path, Path], base: Path
) -> None:
    anon = Client(cluster.grpc_port)
    anon.call(anon.enterprise.Activate, ent.ActivateRequest(activation_code=code(keys[0])))
    token = anon.call(anon.auth.Activate, auth.ActivateRequest(subject="robot:admin")).pach_token
    admin = Client(cluster.grpc_port, token)
    try:
        for name in ("pub", "priv"):
            admin.call(admin.pfs.CreateRepo, pfs.CreateRepoRequest(repo=pfs.Repo(name=name)))
        secret = b"SECRET-" * 1000
        public = b"public-" * 1000
        big = _unique(CHUNK + 99, 9)
        # One stream: /p and /s share one pack; /big is whole chunks.
        _put(
            admin.pfs,
            {("pub", "/p"): public, ("priv", "/s"): secret, ("priv", "/big"): big},
            admin.metadata(),
        )
        alice = admin.call(admin.auth.GetAuthToken, auth.GetAuthTokenRequest(subject="robot:alice"))
        admin.call(
            admin.auth.SetScope,
            auth.SetScopeRequest(username="robot:alice", repo="pub", scope=auth.READER),
        )
        assert _ask(cluster, _request("priv", "master", "/big", token)).data == big
        cases: dict[tuple[str, str, str], type[PachError]] = {
            ("priv", "/big", ""): Unauthenticated,  # no token
            ("priv", "/big", "0" * 64): Unauthenticated,  # not a live token
            ("priv", "/big", alice.token): PermissionDenied,  # no READER
            ("priv", "/s", alice.token): PermissionDenied,
            ("nosuchrepo", "/f", token): NotFound,
        }
        for (repo, path, who), kind in cases.items():
            reply = _ask(cluster, _request(repo, "master", path, who))
            assert isinstance(reply.error, kind), (repo, path, reply.frames)
            assert reply.data == b"" and reply.fd_flags == []
        # alice reads her file; the pack it shares with priv never leaves as a descriptor.
        mine = _ask(cluster, _request("pub", "master", "/p", alice.token))
        assert mine.error is None and mine.data == public
        assert mine.fd_flags == [] and b"SECRET" not in mine.data
        # pachctl: the admin gets the bytes; alice gets gRPC's refusal, nothing else.
        cfg = base / "auth" / "config.json"
        cfg.parent.mkdir()
        cfg.write_text(json.dumps({"v1": {"session_token": token}}))
        done = _pachctl(cluster, cfg, "get-file", "priv", "master", "/big")
        assert done.returncode == 0 and done.stdout == big, done.stderr
        done = _pachctl(cluster, cfg, "get-file", "priv", "master", "/big", importtime=True)
        assert done.returncode == 0 and "grpc" not in _loaded(done.stderr)
        cfg.write_text(json.dumps({"v1": {"session_token": alice.token}}))
        done = _pachctl(cluster, cfg, "get-file", "priv", "master", "/big")
        assert done.returncode == 1 and done.stdout == b""
        assert b"robot:alice" in done.stderr and done.stderr.count(b"\n") == 1
        done = _pachctl(cluster, cfg, "get-file", "pub", "master", "/p")
        assert done.returncode == 0 and done.stdout == public
    finally:
        admin.call(admin.auth.Deactivate, auth.DeactivateRequest())
        admin.close()
        anon.close()
