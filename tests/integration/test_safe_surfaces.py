"""The cluster's surfaces under attack, on real clusters (docs/decisions/
0018-safe-surfaces.md): it listens on loopback unless told otherwise (and
warns when told); the HTTP front refuses what a hostile page can make a
browser send; put-file from a URL reaches no internal address; extract -u
and restore -u stay inside the backup directory."""

from __future__ import annotations

import http.server as httpserver
import os
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from tests.integration.test_pachctl_files import ok, pachctl
from tests.support.cluster import Cluster, wait_until

MAGIC = b"PACHEXT\x01"
SECRET = b"SECRET-CONTENT-root:$6$abcdef"


class Pages(httpserver.BaseHTTPRequestHandler):
    """``/file`` answers bytes; ``/to?u=<url>`` redirects there."""

    def do_GET(self) -> None:
        if self.path.startswith("/to?u="):
            self.send_response(302)
            self.send_header("Location", self.path.removeprefix("/to?u="))
            self.end_headers()
            return
        body = b"fetched\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture(scope="module")
def allowed_server() -> Iterator[str]:
    """An HTTP server on loopback that the cluster's PACH_URL_ALLOW names."""
    srv = httpserver.ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture(scope="module")
def backups(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(tmp_path_factory.mktemp("backups"))


def _start(data: Path, drop_bind: bool, **env: str) -> Cluster:
    c = Cluster(data, **env)
    if drop_bind:  # the default, not the test helper's explicit 127.0.0.1
        for name in ("PACH_GRPC_HOST", "PACH_BIND_ADDRESS"):
            c.env.pop(name, None)
    c.start()
    try:
        c.wait_ready()
    except BaseException:
        c.kill()
        raise
    return c


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, allowed_server: str, backups: Path
) -> Iterator[Cluster]:
    """A cluster on the default bind address."""
    base = Path(tmp_path_factory.mktemp("surfaces"))
    c = _start(base / "data", True, PACH_URL_ALLOW=allowed_server, PACH_BACKUP_DIR=str(backups))
    try:
        yield c
    finally:
        c.kill()


@pytest.fixture
def api(cluster: Cluster) -> Iterator[pfs_pb2_grpc.APIStub]:
    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        stub = pfs_pb2_grpc.APIStub(channel)
        stub.DeleteRepo(pfs.DeleteRepoRequest(all=True, force=True), timeout=30)
        stub.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name="web")), timeout=10)
        yield stub


def repos(api: pfs_pb2_grpc.APIStub) -> list[str]:
    return [r.repo.name for r in api.ListRepo(pfs.ListRepoRequest(), timeout=10).repo_info]


# --- listeners -------------------------------------------------------------------


def listening_addresses(port: int) -> set[str]:
    """The local addresses of LISTEN sockets on ``port`` (from /proc/net)."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            addr, _, hexport = local.partition(":")
            if state != "0A" or int(hexport, 16) != port:
                continue
            raw = bytes.fromhex(addr)
            if width == 8:
                found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
            else:
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                found.add(socket.inet_ntop(socket.AF_INET6, words).removeprefix("::ffff:"))
    return found


def outward_address() -> str | None:
    """A non-loopback address of this machine, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent
        except OSError:
            return None
        addr = str(s.getsockname()[0])
    return None if addr.startswith("127.") or addr == "0.0.0.0" else addr


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def test_the_default_bind_is_loopback(cluster: Cluster) -> None:
    assert reachable("127.0.0.1", cluster.grpc_port)
    for port in (cluster.grpc_port, cluster.http_port):
        addresses = listening_addresses(port)
        if not addresses and not Path("/proc/net/tcp").exists():
            pytest.skip("no /proc/net/tcp here")
        assert addresses == {"127.0.0.1"}, (port, addresses)
        outward = outward_address()
        if outward is not None:
            assert not reachable(outward, port), (outward, port)
    log = cluster.log.read_text()
    assert "WITHOUT AUTH" not in log


def test_binding_beyond_loopback_warns_and_restore_from_the_backup_dir_works(
    cluster: Cluster, api: pfs_pb2_grpc.APIStub, backups: Path, tmp_path: Path
) -> None:
    """A second cluster bound to every interface says so loudly; an extract
    of the first, written under the backup directory, restores into it."""
    ok(pachctl(cluster, "put-file", "web", "master", "/a", "-f", "-", stdin=b"alpha\n"))
    path = backups / "nightly.extract"
    ok(pachctl(cluster, "extract", "-u", str(path)))
    assert path.read_bytes().startswith(MAGIC)

    other = _start(
        tmp_path / "wide", False, PACH_BIND_ADDRESS="0.0.0.0", PACH_BACKUP_DIR=str(backups)
    )
    try:
        wait_until(lambda: "WITHOUT AUTH" in other.log.read_text(), 10)
        warning = [line for line in other.log.read_text().splitlines() if "WITHOUT AUTH" in line]
        assert len(warning) == 1 and "0.0.0.0" in warning[0], warning
        if Path("/proc/net/tcp").exists():
            assert "0.0.0.0" in listening_addresses(other.http_port)
        # a file in the backup dir that is not an extract: named, never quoted
        (backups / "junk.extract").write_bytes(SECRET)
        done = pachctl(other, "restore", "-u", str(backups / "junk.extract"))
        err = done.stderr.decode()
        assert done.returncode != 0 and "not an extract" in err and "SECRET" not in err, err
        ok(pachctl(other, "restore", "-u", f"file://{path}"))
        assert ok(pachctl(other, "get-file", "web", "master", "/a")) == b"alpha\n"
    finally:
        other.kill()


# --- the HTTP front ------------------------------------------------------------------


def http(
    cluster: Cluster, method: str, path: str, body: bytes | None = None, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{cluster.http_port}{path}", data=body, method=method
    )
    for name, value in headers.items():
        req.add_header(name.replace("_", "-"), value)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_get_delete_all_is_405_and_deletes_nothing(
    cluster: Cluster, api: pfs_pb2_grpc.APIStub
) -> None:
    status, headers, _ = http(cluster, "GET", "/api/pfs/DeleteAll")
    assert status == 405 and headers["Allow"] == "POST"
    status, _, _ = http(cluster, "GET", "/api/pfs/DeleteRepo?repo.name=web")
    assert status == 405
    assert repos(api) == ["web"]


def test_cross_site_requests_are_refused(cluster: Cluster, api: pfs_pb2_grpc.APIStub) -> None:
    # What a hostile page's <form> or no-cors fetch can send.
    status, _, _ = http(
        cluster,
        "POST",
        "/api/pfs/DeleteAll",
        b"{}",
        Content_Type="text/plain",
        Origin="http://evil.example",
    )
    assert status == 403
    status, _, _ = http(cluster, "POST", "/api/pfs/DeleteAll", b"{}", Content_Type="text/plain")
    assert status == 403
    status, _, body = http(
        cluster,
        "POST",
        "/api/pfs/DeleteAll",
        b"{}",
        Content_Type="application/json",
        Origin="http://evil.example",
    )
    assert status == 403 and b"cross-origin" in body
    status, _, _ = http(cluster, "PUT", "/pfs/web/master/x", b"evil", Origin="http://evil.example")
    assert status == 403
    status, _, body = http(
        cluster, "GET", "/api/pfs/ListRepo", Host=f"evil.example:{cluster.http_port}"
    )
    assert status == 403 and b"DNS-rebinding" in body
    assert repos(api) == ["web"]
    assert not api.ListCommit(pfs.ListCommitRequest(repo=pfs.Repo(name="web"))).commit_info


def test_the_dashboard_still_works_under_its_policy(
    cluster: Cluster, api: pfs_pb2_grpc.APIStub
) -> None:
    status, headers, page = http(cluster, "GET", "/")
    assert status == 200
    csp = headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["Referrer-Policy"]
    assert b"<script>" not in page and b"<style>" not in page  # the CSP runs none inline
    status, headers, script = http(cluster, "GET", "/static/index.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    assert b'"Content-Type": "application/json"' in script
    # what the page's script sends, from its own origin
    origin = f"http://127.0.0.1:{cluster.http_port}"
    status, headers, _ = http(
        cluster,
        "POST",
        "/api/pfs/CreateRepo",
        b'{"repo": {"name": "made"}}',
        Content_Type="application/json",
        Origin=origin,
    )
    assert status == 200 and "Content-Security-Policy" in headers
    assert sorted(repos(api)) == ["made", "web"]
    status, headers, page = http(cluster, "GET", "/repos/made")
    assert status == 200 and b'href="/static/pages.css"' in page
    assert "Access-Control-Allow-Origin" not in headers


# --- put-file from a URL ---------------------------------------------------------------


def put_url(api: pfs_pb2_grpc.APIStub, url: str) -> grpc.RpcError | None:
    first = pfs.PutFileRequest(
        file=pfs.File(commit=pfs.Commit(repo=pfs.Repo(name="web"), id="master"), path="/got"),
        url=url,
    )
    try:
        api.PutFile(iter([first]), timeout=60)
    except grpc.RpcError as err:
        return err
    return None


def test_put_file_urls_reach_no_internal_address(
    cluster: Cluster, api: pfs_pb2_grpc.APIStub, allowed_server: str
) -> None:
    nats_port = cluster.state()["nats"]["port"]
    loopback_name = socket.gethostname()
    if not any(str(i[4][0]).startswith("127.") for i in socket.getaddrinfo(loopback_name, None)):
        loopback_name = "localhost"
    refused = {
        f"http://127.0.0.1:{nats_port}/": "127.0.0.1",  # NATS: no INFO banner in the answer
        f"http://127.0.0.1:{cluster.http_port}/api/pfs/ListRepo": "127.0.0.1",
        f"http://localhost:{cluster.http_port}/": "localhost",
        "http://169.254.169.254/latest/meta-data/": "169.254.169.254",
        "http://10.0.0.1/": "10.0.0.1",
        f"http://[::1]:{cluster.http_port}/": "::1",
        f"http://{loopback_name}:{cluster.http_port}/": loopback_name,
        f"http://{allowed_server}/to?u=http://127.0.0.1:{cluster.http_port}/": "127.0.0.1",
    }
    for url, host in refused.items():
        err = put_url(api, url)
        assert err is not None, url
        details = err.details() or ""
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED, (url, details)
        assert "\n" not in details and host in details and "refused" in details, details
        assert "INFO" not in details and "server_id" not in details, details
    # a refused port and a closed one look alike
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    a = put_url(api, f"http://127.0.0.1:{nats_port}/")
    b = put_url(api, f"http://127.0.0.1:{closed_port}/")
    assert a is not None and b is not None
    assert (a.details() or "").replace(str(nats_port), "P") == (b.details() or "").replace(
        str(closed_port), "P"
    )
    assert not api.ListCommit(pfs.ListCommitRequest(repo=pfs.Repo(name="web"))).commit_info

    # what PACH_URL_ALLOW names is fetched
    assert put_url(api, f"http://{allowed_server}/file") is None
    got = api.GetFile(
        pfs.GetFileRequest(
            file=pfs.File(commit=pfs.Commit(repo=pfs.Repo(name="web"), id="master"), path="/got")
        )
    )
    assert b"".join(m.value for m in got) == b"fetched\n"

    # and pachctl shows the refusal in one line
    done = pachctl(cluster, "put-file", "web", "master", "/m", "-f", "http://169.254.169.254/")
    assert done.returncode != 0
    assert "169.254.169.254 is a link-local address" in done.stderr.decode()


# --- extract -u / restore -u -------------------------------------------------------


def test_backup_files_stay_in_the_backup_dir(
    cluster: Cluster, api: pfs_pb2_grpc.APIStub, backups: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "x.extract"
    done = pachctl(cluster, "extract", "-u", str(outside))
    assert done.returncode != 0 and not outside.exists()
    err = done.stderr.decode()
    assert "PERMISSION_DENIED" in err or "PermissionDenied" in err or "refused" in err, err
    assert str(backups) in err, err
    for url in (
        "/tmp/x",
        f"{backups}/../escaped.extract",
        f"file://{backups}/../escaped.extract",
    ):
        done = pachctl(cluster, "extract", "-u", url)
        assert done.returncode != 0 and str(backups) in done.stderr.decode(), url
    assert not (backups.parent / "escaped.extract").exists()

    # a file full of secrets, outside; and a symlink to it, inside
    secret = tmp_path / "shadow"
    secret.write_bytes(SECRET + b"\n" * 100)
    (backups / "link.extract").symlink_to(secret)
    (backups / "inner").mkdir(exist_ok=True)
    (backups / "inner" / "up").symlink_to(tmp_path)
    for url in ("/etc/shadow", str(secret), str(backups / "link.extract"),
                f"{backups}/inner/up/shadow"):  # fmt: skip
        done = pachctl(cluster, "restore", "-u", url)
        err = done.stderr.decode()
        assert done.returncode != 0 and str(backups) in err, (url, err)
        assert "root:" not in err and "SECRET" not in err, err
    assert repos(api) == ["web"]
    os.unlink(backups / "link.extract")
