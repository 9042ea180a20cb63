"""pachctl get-file over the gateway's HTTP download, sent with sendfile
from the local store (docs/decisions/0036-get-file-fast-path.md), against a
real cluster: the gateway advertises the port, the bytes are the file's
across chunk boundaries (the traffic seen by a relay in between proves they
came over HTTP), pachctl falls back to gRPC when the download is not there,
a download cut mid-body is an error with no half file, and with auth active
the download refuses what gRPC refuses, with a precise 4xx. The last test
activates auth: it runs last."""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from libs.api.auth import auth_pb2 as auth
from libs.api.enterprise import enterprise_pb2 as ent
from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from tests.integration.auth_support import Client, code, write_keys
from tests.support.cluster import ROOT, Cluster, running

MiB = 1 << 20
CHUNK = 8 * MiB


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(tmp_path_factory.mktemp("fastget"))


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


def _unique(n: int, salt: int = 0) -> bytes:
    """``n`` bytes differing at every 8-byte position (a misplaced range shows)."""
    return b"".join((salt << 40 | i).to_bytes(8, "big") for i in range(n // 8 + 1))[:n]


def _put(
    api: pfs_pb2_grpc.APIStub,
    repo: str,
    files: dict[str, bytes],
    meta: tuple[tuple[str, str], ...] = (),
) -> None:
    def requests() -> Iterator[pfs.PutFileRequest]:
        for path, data in files.items():
            commit = pfs.Commit(repo=pfs.Repo(name=repo), id="master")
            yield pfs.PutFileRequest(file=pfs.File(commit=commit, path=path))
            for i in range(0, len(data), MiB):
                yield pfs.PutFileRequest(value=data[i : i + MiB])

    api.PutFile(requests(), timeout=120, metadata=meta)


def _pachctl(
    cluster: Cluster, *args: str, config: Path | None = None, http: str | None = None
) -> subprocess.CompletedProcess[bytes]:
    env = {
        **os.environ,
        "PACHD_ADDRESS": f"127.0.0.1:{cluster.grpc_port}",
        "PYTHONPATH": str(ROOT),
        "PACH_CONFIG": str(config or cluster.data_dir.parent / "no-config.json"),
        "PACH_LOCAL_SOCKET": "off",  # the HTTP path (the local socket: 0039's tests)
    }
    env.pop("PACH_HTTP_ADDRESS", None)
    if http is not None:
        env["PACH_HTTP_ADDRESS"] = http
    return subprocess.run(
        [sys.executable, "-m", "programs.pachctl", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=120,
    )


class Relay:
    """A TCP relay to the gateway's HTTP port that counts the bytes it
    passes back, and cuts every answer after ``cut`` bytes when set."""

    def __init__(self, port: int, cut: int | None = None) -> None:
        self.target = port
        self.cut = cut
        self.received = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, back: bool) -> None:
        sent = 0
        try:
            while data := src.recv(MiB):
                if back and self.cut is not None and sent + len(data) > self.cut:
                    dst.sendall(data[: self.cut - sent])
                    break
                if back:  # counted before the client can see it
                    self.received += len(data)
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self.server.close()


def test_inspect_file_advertises_the_http_download(
    cluster: Cluster, api: pfs_pb2_grpc.APIStub
) -> None:
    api.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name="adv")), timeout=10)
    _put(api, "adv", {"/f": b"x"})
    file = pfs.File(commit=pfs.Commit(repo=pfs.Repo(name="adv"), id="master"), path="/f")
    _, call = api.InspectFile.with_call(pfs.InspectFileRequest(file=file), timeout=10)
    assert ("pach-http-port", str(cluster.http_port)) in tuple(call.trailing_metadata())


def test_get_file_bytes_over_http_are_the_files(
    cluster: Cluster, api: pfs_pb2_grpc.APIStub, tmp_path: Path
) -> None:
    api.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name="bytes")), timeout=10)
    files = {
        "/empty": b"",
        "/one": b"1",
        "/small": _unique(70_001, 1),  # packed: a range inside a shared pack
        "/under": _unique(CHUNK - 1, 2),
        "/exact": _unique(CHUNK, 3),
        "/over": _unique(CHUNK + 1, 4),
        "/many": _unique(5 * CHUNK + 12_345, 5),
        "/dir/name with space#%.bin": _unique(3000, 6),
    }
    _put(api, "bytes", files)
    relay = Relay(cluster.http_port)
    try:
        for path, data in files.items():
            before = relay.received
            done = _pachctl(
                cluster, "get-file", "bytes", "master", path, http=f"127.0.0.1:{relay.port}"
            )
            assert done.returncode == 0, done.stderr
            assert done.stdout == data, path
            assert relay.received - before >= len(data)  # over HTTP, not gRPC
            out = tmp_path / "out.bin"
            done = _pachctl(
                cluster, "get-file", "bytes", "master", path, "-o", str(out),
                http=f"127.0.0.1:{relay.port}",
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            assert out.read_bytes() == data, path
    finally:
        relay.close()
    # Two sent files and a range on one kept-alive connection: each answer
    # ends exactly at its length.
    conn = http.client.HTTPConnection("127.0.0.1", cluster.http_port, timeout=30)
    try:
        for path, want in (("/over", files["/over"]), ("/small", files["/small"])):
            conn.request("GET", "/pfs/bytes/master" + path)
            assert conn.getresponse().read() == want
        conn.request("GET", "/pfs/bytes/master/many", headers={"Range": f"bytes={CHUNK - 3}-"})
        reply = conn.getresponse()
        assert reply.status == 206 and reply.read() == files["/many"][CHUNK - 3 :]
    finally:
        conn.close()
    # Without PACH_HTTP_ADDRESS: the advertised port, and the same bytes.
    done = _pachctl(cluster, "get-file", "bytes", "master", "/many")
    assert done.returncode == 0 and done.stdout == files["/many"]


def test_get_file_falls_back_to_grpc(cluster: Cluster, api: pfs_pb2_grpc.APIStub) -> None:
    api.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name="fallback")), timeout=10)
    data = _unique(CHUNK + 7, 7)
    _put(api, "fallback", {"/f": data})
    dead = socket.create_server(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()  # nothing listens there now
    for where in (f"127.0.0.1:{port}", "off"):
        done = _pachctl(cluster, "get-file", "fallback", "master", "/f", http=where)
        assert done.returncode == 0 and done.stdout == data, done.stderr
    # A directory or a missing file: gRPC's own answers, as before.
    missing = _pachctl(cluster, "get-file", "fallback", "master", "/nope")
    assert missing.returncode == 1 and b"not found" in missing.stderr.lower()
    assert missing.stdout == b""


def test_a_download_cut_mid_body_is_an_error_not_a_short_file(
    cluster: Cluster, api: pfs_pb2_grpc.APIStub, tmp_path: Path
) -> None:
    api.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name="cut")), timeout=10)
    data = _unique(2 * CHUNK, 8)
    _put(api, "cut", {"/f": data})
    relay = Relay(cluster.http_port, cut=3 * MiB)
    try:
        out = tmp_path / "cut.bin"
        done = _pachctl(
            cluster, "get-file", "cut", "master", "/f", "-o", str(out),
            http=f"127.0.0.1:{relay.port}",
        )  # fmt: skip
        assert done.returncode == 1
        err = done.stderr.decode()
        assert err.count("\n") == 1 and f"of {len(data)} bytes" in err, err
        assert out.read_bytes() == b""  # no half file
        done = _pachctl(cluster, "get-file", "cut", "master", "/f", http=f"127.0.0.1:{relay.port}")
        assert done.returncode == 1 and len(done.stdout) < len(data)
    finally:
        relay.close()


def _get(cluster: Cluster, path: str, token: str = "") -> tuple[int, bytes, str]:
    headers = {"authn-token": token} if token else {}
    req = urllib.request.Request(f"http://127.0.0.1:{cluster.http_port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers.get("Content-Type", "")


def test_the_download_under_auth_refuses_what_grpc_refuses(
    cluster: Cluster, keys: tuple[Path, Path], base: Path
) -> None:
    anon = Client(cluster.grpc_port)
    anon.call(anon.enterprise.Activate, ent.ActivateRequest(activation_code=code(keys[0])))
    token = anon.call(anon.auth.Activate, auth.ActivateRequest(subject="robot:admin")).pach_token
    admin = Client(cluster.grpc_port, token)
    admin.call(admin.pfs.CreateRepo, pfs.CreateRepoRequest(repo=pfs.Repo(name="secret")))
    data = _unique(CHUNK + 99, 9)
    _put(admin.pfs, "secret", {"/f": data}, tuple(admin.metadata()))
    alice = admin.call(admin.auth.GetAuthToken, auth.GetAuthTokenRequest(subject="robot:alice"))
    try:
        good = _get(cluster, "/pfs/secret/master/f", token)
        assert good[0] == 200 and good[1] == data
        cases = {
            ("/pfs/secret/master/f", ""): 401,  # no token
            ("/pfs/secret/master/f", "0" * 64): 401,  # not a live token
            ("/pfs/secret/master/f", alice.token): 403,  # no READER on the repo
            ("/pfs/secret/nosuchbranch/f", token): 404,
            ("/pfs/secret/master/nosuchfile", token): 404,
            ("/pfs/nosuchrepo/master/f", token): 404,
            ("/pfs/secret/master/%2E%2E/%2E%2E/other/master/f", token): 400,
            ("/pfs/secret/master/..%2F..%2Fadv%2Fmaster%2Ff", token): 400,
        }
        for (path, who), status in cases.items():
            got, body, kind = _get(cluster, path, who)
            assert got == status, (path, got, body)
            assert kind.startswith("application/json") and data[:64] not in body
        # pachctl: the admin gets the bytes; alice gets gRPC's refusal, nothing else.
        cfg = base / "admin.json"
        cfg.write_text(f'{{"v1": {{"session_token": "{token}"}}}}')
        relay = Relay(cluster.http_port)
        try:
            done = _pachctl(
                cluster, "get-file", "secret", "master", "/f", config=cfg,
                http=f"127.0.0.1:{relay.port}",
            )  # fmt: skip
            assert done.returncode == 0 and done.stdout == data, done.stderr
            assert relay.received >= len(data)
        finally:
            relay.close()
        cfg.write_text(f'{{"v1": {{"session_token": "{alice.token}"}}}}')
        done = _pachctl(cluster, "get-file", "secret", "master", "/f", config=cfg)
        assert done.returncode == 1 and done.stdout == b""
        assert b"robot:alice" in done.stderr
    finally:
        admin.call(admin.auth.Deactivate, auth.DeactivateRequest())
        admin.close()
        anon.close()
