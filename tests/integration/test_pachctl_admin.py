"""The admin commands through pachctl on real clusters: inspect-cluster,
delete-all's question, and extract/restore's refusals (a terminal, a
non-empty target, a truncated or corrupted extract) and its -u round trip."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import secrets
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from libs.api.admin import admin_pb2 as admin
from libs.api.admin import admin_pb2_grpc
from libs.api.pfs import pfs_pb2 as pfs
from libs.objects.s3 import S3ObjectStore
from tests.integration.test_pachctl_files import ok, pachctl
from tests.servers.fixtures import s3_server  # noqa: F401
from tests.servers.s3server import S3Server
from tests.support.cluster import ROOT, Cluster, running

MAGIC = b"PACHEXT\x01"


SKIP_S3 = os.environ.get("PACH_SKIP_S3") == "1"


@pytest.fixture(scope="module")
def s3(request: pytest.FixtureRequest) -> S3Server | None:
    if SKIP_S3:
        return None
    server: S3Server = request.getfixturevalue("s3_server")
    return server


@pytest.fixture(scope="module")
def s3_env(s3: S3Server | None) -> dict[str, str]:
    """The S3 endpoint and keys ``-u s3://`` uses (the object store stays local)."""
    return {} if s3 is None else s3.env()


@pytest.fixture(scope="module")
def backups(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The backup directory both clusters' ``-u`` files go under."""
    return Path(tmp_path_factory.mktemp("backups"))


@pytest.fixture(scope="module")
def source(
    tmp_path_factory: pytest.TempPathFactory, s3_env: dict[str, str], backups: Path
) -> Iterator[Cluster]:
    """A cluster with a repo, two commits and a finished pipeline job."""
    base = Path(tmp_path_factory.mktemp("admin-src"))
    c = Cluster(base / "data", PACH_BACKUP_DIR=str(backups), **s3_env).start()
    try:
        c.wait_ready()
        ok(pachctl(c, "create-repo", "data"))
        ok(pachctl(c, "put-file", "data", "master", "/a", "-f", "-", stdin=b"alpha\n"))
        ok(pachctl(c, "put-file", "data", "master", "/b", "-f", "-", stdin=b"beta\n"))
        spec = {
            "pipeline": {"name": "copy"},
            "transform": {"cmd": ["sh"], "stdin": ["cp /pfs/data/* /pfs/out/"]},
            "input": {"atom": {"repo": "data", "glob": "/*"}},
        }
        (base / "copy.json").write_text(json.dumps(spec))
        ok(pachctl(c, "create-pipeline", "-f", str(base / "copy.json")))
        ok(pachctl(c, "flush-commit", "data/master"))
        yield c
    finally:
        c.kill()


@pytest.fixture(scope="module")
def backup(source: Cluster) -> bytes:
    data = ok(pachctl(source, "extract"))
    assert data.startswith(MAGIC)
    return data


@pytest.fixture
def target(tmp_path: Path, s3_env: dict[str, str], backups: Path) -> Iterator[Cluster]:
    yield from running(tmp_path / "target", PACH_BACKUP_DIR=str(backups), **s3_env)


def fail(done: subprocess.CompletedProcess[bytes]) -> str:
    assert done.returncode != 0, done.stdout.decode(errors="replace")
    return done.stderr.decode()


def listings(c: Cluster) -> dict[str, bytes]:
    return {
        "repos": ok(pachctl(c, "list-repo", "--raw")),
        "commits": ok(pachctl(c, "list-commit", "data", "--raw")),
        "files": ok(pachctl(c, "list-file", "data", "master", "--raw")),
        "a": ok(pachctl(c, "get-file", "data", "master", "/a")),
        "out": ok(pachctl(c, "get-file", "copy", "master", "/b")),
        "pipelines": ok(pachctl(c, "list-pipeline", "--raw")),
        "jobs": ok(pachctl(c, "list-job", "--raw")),
    }


def assert_empty(c: Cluster) -> None:
    assert len(ok(pachctl(c, "list-repo")).decode().splitlines()) == 1
    assert ok(pachctl(c, "list-pipeline", "--raw")).strip() == b""
    assert len(ok(pachctl(c, "inspect-cluster")).strip()) == 32


def test_inspect_cluster_answers_a_stable_id(source: Cluster) -> None:
    first = ok(pachctl(source, "inspect-cluster")).decode()
    assert first.endswith("\n") and len(first.strip()) == 32, first
    assert ok(pachctl(source, "inspect-cluster")).decode() == first
    url = f"http://127.0.0.1:{source.http_port}/api/admin/InspectCluster"
    with urllib.request.urlopen(url, timeout=10) as reply:
        assert json.loads(reply.read()) == {"id": first.strip()}


def test_extract_refuses_a_terminal(source: Cluster) -> None:
    controller, terminal = pty.openpty()
    try:
        env = {
            **os.environ,
            "PACHD_ADDRESS": f"127.0.0.1:{source.grpc_port}",
            "PYTHONPATH": str(ROOT),
        }
        done = subprocess.run(
            [sys.executable, "-m", "programs.pachctl", "extract"],
            cwd=ROOT,
            env=env,
            stdout=terminal,
            stderr=subprocess.PIPE,
            timeout=60,
        )
    finally:
        os.close(terminal)
        os.close(controller)
    assert done.returncode == 1
    assert "redirect stdout to a file" in done.stderr.decode()


def test_partial_and_1_7_requests_are_refused(source: Cluster) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{source.grpc_port}") as channel:
        api = admin_pb2_grpc.APIStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            list(api.Extract(admin.ExtractRequest(no_repos=True), timeout=30))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "whole event log" in (caught.value.details() or "")

        old = admin.RestoreRequest(
            op=admin.Op(op1_7=admin.Op1_7(repo=pfs.CreateRepoRequest(repo=pfs.Repo(name="x"))))
        )
        with pytest.raises(grpc.RpcError) as caught:
            api.Restore(iter([old]), timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "1.7" in (caught.value.details() or "")
    assert b"x\n" not in ok(pachctl(source, "list-repo"))


def test_http_extract_downloads_the_stream(source: Cluster) -> None:
    url = f"http://127.0.0.1:{source.http_port}/api/admin/extract?no_objects=true"
    with urllib.request.urlopen(url, timeout=60) as reply:
        assert reply.headers["Content-Type"] == "application/octet-stream"
        assert "attachment" in reply.headers["Content-Disposition"]
        assert reply.read(len(MAGIC)) == MAGIC


def test_restore_into_a_non_empty_cluster_is_refused(source: Cluster, backup: bytes) -> None:
    before = listings(source)
    err = fail(pachctl(source, "restore", stdin=backup))
    assert "FAILED_PRECONDITION" in err and "empty" in err, err
    assert listings(source) == before


def test_truncated_and_corrupted_extracts_are_refused(
    source: Cluster, backup: bytes, target: Cluster
) -> None:
    cut = backup[: len(backup) - 40]  # the trailer is gone
    err = fail(pachctl(target, "restore", stdin=cut))
    assert "truncated" in err or "trailer" in err, err
    assert_empty(target)

    # One byte of the last event's batch changed: the frames still parse,
    # the trailer's checksum does not hold.
    corrupt = bytearray(backup)
    corrupt[len(backup) - 200] ^= 0xFF
    err = fail(pachctl(target, "restore", stdin=bytes(corrupt)))
    assert "checksum" in err or "corrupt" in err, err
    assert_empty(target)

    err = fail(pachctl(target, "restore", stdin=b"not an extract at all"))
    assert "not an extract" in err, err
    assert_empty(target)

    # The refusals left nothing behind: the whole extract restores after them.
    ok(pachctl(target, "restore", stdin=backup))
    assert listings(target) == listings(source)


def _records(data: bytes) -> list[admin.RestoreRequest]:
    from libs.extract_format import decode_frames

    async def read() -> list[admin.RestoreRequest]:
        async def blocks() -> AsyncIterator[bytes]:
            yield data

        return [admin.RestoreRequest(op=admin.Op(record=r)) async for r in decode_frames(blocks())]

    return asyncio.run(read())


def test_grpc_extract_and_restore_by_record_and_by_frames(
    source: Cluster, target: Cluster, backup: bytes
) -> None:
    """pachctl moves the stream as blocks of its bytes (Op.frames); a client
    may also send and receive one Op.record per record. pachd checks a
    frames stream itself: a client need not decode it first."""
    with grpc.insecure_channel(f"127.0.0.1:{source.grpc_port}") as channel:
        ops = list(admin_pb2_grpc.APIStub(channel).Extract(admin.ExtractRequest(), timeout=60))
    assert ops and all(op.HasField("record") and not op.frames for op in ops)
    by_record = [admin.RestoreRequest(op=admin.Op(record=op.record)) for op in ops]

    with grpc.insecure_channel(f"127.0.0.1:{target.grpc_port}") as channel:
        api = admin_pb2_grpc.APIStub(channel)
        blocks = [backup[i : i + 1000] for i in range(0, len(backup), 1000)]
        cut = [admin.RestoreRequest(op=admin.Op(frames=b)) for b in blocks[:-1]]
        with pytest.raises(grpc.RpcError) as caught:
            api.Restore(iter(cut), timeout=60)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value
        assert "truncated" in (caught.value.details() or ""), caught.value.details()
        assert_empty(target)

        mixed = [*cut, _records(backup)[-1]]
        with pytest.raises(grpc.RpcError) as caught:
            api.Restore(iter(mixed), timeout=60)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value
        assert "only Op.frames" in (caught.value.details() or ""), caught.value.details()
        assert_empty(target)

        api.Restore(iter(by_record), timeout=120)
    assert listings(target) == listings(source)


def test_url_round_trip(source: Cluster, target: Cluster, backups: Path) -> None:
    path = backups / "backup.extract"
    ok(pachctl(source, "extract", "-u", str(path)))
    assert path.read_bytes().startswith(MAGIC)
    assert not [p for p in backups.iterdir() if p.name.endswith(".part")]

    err = fail(pachctl(source, "extract", "-u", "relative/backup"))
    assert "relative path" in err, err
    err = fail(pachctl(target, "restore", "-u", str(backups / "missing")))
    assert "no extract at" in err, err
    assert_empty(target)

    ok(pachctl(target, "restore", "-u", f"file://{path}"))
    assert listings(target) == listings(source)
    assert ok(pachctl(target, "inspect-cluster")) != ok(pachctl(source, "inspect-cluster"))


def test_s3_url_round_trip(source: Cluster, target: Cluster, s3: S3Server | None) -> None:
    if s3 is None:
        pytest.skip("PACH_SKIP_S3=1: S3 tests skipped")
    bucket = f"backups-{secrets.token_hex(4)}"
    store = S3ObjectStore(
        bucket, s3.endpoint, s3.region, access_key=s3.access_key, secret_key=s3.secret_key
    )

    async def make_bucket() -> None:
        try:
            await store.ensure_bucket()
        finally:
            await store.close()

    asyncio.run(make_bucket())
    url = f"s3://{bucket}/nightly/backup"
    ok(pachctl(source, "extract", "-u", url))
    err = fail(pachctl(target, "restore", "-u", f"s3://{bucket}/nightly/missing"))
    assert "NOT_FOUND" in err, err
    assert_empty(target)
    ok(pachctl(target, "restore", "-u", url))
    assert listings(target) == listings(source)


def test_delete_all_asks_first(target: Cluster, tmp_path: Path) -> None:
    c = target
    ok(pachctl(c, "create-repo", "one"))
    ok(pachctl(c, "create-repo", "two"))
    spec = {
        "pipeline": {"name": "cat"},
        "transform": {"cmd": ["sh"], "stdin": ["cp -r /pfs/one/. /pfs/out/"]},
        "input": {"atom": {"repo": "one", "glob": "/"}},
    }
    (tmp_path / "cat.json").write_text(json.dumps(spec))
    ok(pachctl(c, "create-pipeline", "-f", str(tmp_path / "cat.json")))

    said = ok(pachctl(c, "delete-all", stdin=b"n\n")).decode()
    assert said.startswith(
        "Are you sure you want to delete all ACLs, repos, commits, files, pipelines and jobs?\nyN\n"
    )
    assert "Repos to delete: " in said and "one" in said and "two" in said
    assert "Pipelines to delete: cat\n" in said
    assert len(ok(pachctl(c, "list-repo")).decode().splitlines()) == 4

    err = fail(pachctl(c, "delete-all", stdin=b""))
    assert "--force" in err, err
    assert len(ok(pachctl(c, "list-repo")).decode().splitlines()) == 4

    ok(pachctl(c, "delete-all", stdin=b"y\n"))
    assert_empty(c)

    ok(pachctl(c, "create-repo", "three"))
    assert ok(pachctl(c, "delete-all", "--force")) == b""
    assert_empty(c)
