"""Garbage collection on a real cluster, through pachctl: data of deleted
commits and repos leaves every object file; what repos, commits, open
commits and pipelines (outputs and stats) still reference reads back; writes
during a collection (a put-file into an open commit, a running job) are
spared; a second collection deletes nothing. And the S3 backend's
modification times and touch, against the real S3 server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from libs.api.pps import pps_pb2 as pps
from libs.objects import S3ObjectStore, hash_bytes
from tests.integration.test_pachctl_files import ok, pachctl
from tests.integration.test_pps_semantics import all_done, create, get, put
from tests.servers.fixtures import s3_server  # noqa: F401
from tests.servers.s3server import S3Server
from tests.support.cluster import Cluster, running

MiB = 1 << 20
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from running(Path(tmp_path_factory.mktemp("gc")) / "data")


def secret(marker: bytes, size: int) -> bytes:
    """Random bytes with ``marker`` every 64 KiB, so every piece holds it."""
    block = 64 << 10
    return b"".join(marker + os.urandom(block - len(marker)) for _ in range(size // block))


def holding(cluster: Cluster, markers: list[bytes]) -> list[str]:
    """Every file under the object store's directory that holds a marker."""
    found = []
    for p in (cluster.data_dir / "objects").rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            if any(m in data for m in markers):
                found.append(str(p))
    return found


def collect(cluster: Cluster) -> dict[str, int]:
    out = ok(pachctl(cluster, "garbage-collect")).decode()
    counts = {}
    for what in ("Deleted", "Kept", "Spared"):
        m = re.search(rf"^{what} (\d+) objects? ", out, re.M)
        assert m, out
        counts[what.lower()] = int(m.group(1))
    return counts


def test_gc_on_an_empty_event_log_deletes_nothing(cluster: Cluster) -> None:
    # Only a restore puts objects into a cluster without events (before its
    # first event): they must not be collected.
    data = b"restored before its events"
    key = hash_bytes(data)
    path = cluster.data_dir / "objects" / "chunks" / key[:2] / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    old = time.time() - 3600
    os.utime(path, (old, old))
    assert collect(cluster)["deleted"] == 0
    assert path.read_bytes() == data


def test_gc_removes_deleted_data_and_keeps_what_is_referenced(
    cluster: Cluster, tmp_path: Path
) -> None:
    markers = [b"GC-SECRET-" + secrets.token_hex(8).encode() for _ in range(4)]
    big_secret = secret(markers[0], 3 * MiB)  # its own chunks
    small_secret = markers[1] + b" a small file, packed\n"
    old_big = secret(markers[2], 2 * MiB)
    old_small = markers[3] + b" small, in a deleted commit\n"
    live_big = os.urandom(3 * MiB + 5)
    shared = os.urandom(2 * MiB)  # in a deleted repo and in a kept one

    ok(pachctl(cluster, "create-repo", "gc_keep"))
    put(cluster, "gc_keep", "/big", live_big)
    put(cluster, "gc_keep", "/small", b"live small\n")
    put(cluster, "gc_keep", "/shared", shared)
    ok(pachctl(cluster, "create-repo", "gc_doomed"))
    put(cluster, "gc_doomed", "/big", big_secret)
    put(cluster, "gc_doomed", "/small", small_secret)
    put(cluster, "gc_doomed", "/shared", shared)
    ok(pachctl(cluster, "create-repo", "gc_hist"))
    put(cluster, "gc_hist", "/kept", b"first commit\n")
    ok(pachctl(cluster, "start-commit", "gc_hist", "master"))
    put(cluster, "gc_hist", "/old_big", old_big)
    put(cluster, "gc_hist", "/old_small", old_small)
    ok(pachctl(cluster, "finish-commit", "gc_hist", "master"))
    # A pipeline with stats: its output and stats branches must survive.
    ok(pachctl(cluster, "create-repo", "gc_in"))
    ok(pachctl(cluster, "start-commit", "gc_in", "master"))
    put(cluster, "gc_in", "/a", b"alpha\n")
    put(cluster, "gc_in", "/b", os.urandom(MiB + 3))
    ok(pachctl(cluster, "finish-commit", "gc_in", "master"))
    spec = {
        "pipeline": {"name": "gc_copy"},
        "transform": {"cmd": ["sh"], "stdin": ["cp /pfs/gc_in/* /pfs/out/"]},
        "input": {"atom": {"repo": "gc_in", "glob": "/*"}},
        "enable_stats": True,
    }
    create(cluster, tmp_path, spec)
    [job] = all_done(cluster, "gc_copy", 1)
    assert job.state == pps.JOB_SUCCESS, job
    stats_listing = ok(pachctl(cluster, "list-file", "gc_copy", "stats", "/")).decode()
    assert stats_listing.count("dir") == 2, stats_listing

    assert holding(cluster, markers)  # the secrets are stored
    ok(pachctl(cluster, "delete-repo", "gc_doomed"))
    ok(pachctl(cluster, "delete-commit", "gc_hist", "master"))
    time.sleep(1.5)  # past the grace (PACH_GC_GRACE_S, 1 s)

    first = collect(cluster)
    assert first["deleted"] > 0, first
    assert holding(cluster, markers) == []
    # Everything still referenced reads back.
    assert get(cluster, "gc_keep", "master", "/big") == live_big
    assert get(cluster, "gc_keep", "master", "/small") == b"live small\n"
    assert get(cluster, "gc_keep", "master", "/shared") == shared
    assert get(cluster, "gc_hist", "master", "/kept") == b"first commit\n"
    assert get(cluster, "gc_copy", "master", "/a") == b"alpha\n"
    assert len(get(cluster, "gc_copy", "master", "/b")) == MiB + 3
    for line in stats_listing.splitlines()[1:]:
        datum = line.split()[0]
        listing = ok(pachctl(cluster, "list-file", "gc_copy", "stats", datum)).decode()
        assert "logs" in listing and "pfs" in listing, listing
        get(cluster, "gc_copy", "stats", f"{datum}/stats")
    # The job's input is still readable at the commit it read.
    assert get(cluster, "gc_in", "master", "/a") == b"alpha\n"

    second = collect(cluster)
    assert second["deleted"] == 0, second
    assert second["kept"] == first["kept"] + first["spared"] - second["spared"], (first, second)


def _slow_put(
    cluster: Cluster, repo: str, path: str, data: bytes, block: int
) -> tuple[subprocess.Popen[bytes], threading.Thread]:
    env = {**os.environ, "PACHD_ADDRESS": f"127.0.0.1:{cluster.grpc_port}", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "programs.pachctl", "put-file", repo, "master", path, "-f", "-"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )

    def feed() -> None:
        assert proc.stdin is not None
        for i in range(0, len(data), block):
            proc.stdin.write(data[i : i + block])
            proc.stdin.flush()
            time.sleep(0.25)
        proc.stdin.close()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    return proc, feeder


def test_gc_spares_writes_in_progress(cluster: Cluster, tmp_path: Path) -> None:
    # An open commit holding an uncommitted put.
    ok(pachctl(cluster, "create-repo", "gc_open"))
    commit = ok(pachctl(cluster, "start-commit", "gc_open", "master")).decode().strip()
    pending_big = os.urandom(2 * MiB + 1)
    ok(pachctl(cluster, "put-file", "gc_open", commit, "/pending", "-f", "-", stdin=pending_big))
    ok(pachctl(cluster, "put-file", "gc_open", commit, "/tiny", "-f", "-", stdin=b"tiny\n"))
    # A job that runs for a while.
    ok(pachctl(cluster, "create-repo", "gc_slow_in"))
    spec = {
        "pipeline": {"name": "gc_slow"},
        "transform": {"cmd": ["sh"], "stdin": ["sleep 4", "cp /pfs/gc_slow_in/* /pfs/out/"]},
        "input": {"atom": {"repo": "gc_slow_in", "glob": "/*"}},
    }
    create(cluster, tmp_path, spec)
    slow_input = os.urandom(MiB + 7)
    put(cluster, "gc_slow_in", "/x", slow_input)
    # A put-file streaming into a new commit on a branch.
    ok(pachctl(cluster, "create-repo", "gc_stream"))
    streamed = os.urandom(12 * MiB)
    proc, feeder = _slow_put(cluster, "gc_stream", "/streamed", streamed, MiB)
    time.sleep(1.5)
    during = collect(cluster)  # the put is half way, the job sleeping
    assert feeder.is_alive()  # the collection ran while the put was streaming
    feeder.join(60)
    assert proc.wait(120) == 0, proc.stderr.read().decode() if proc.stderr else ""
    assert during["deleted"] >= 0

    [job] = all_done(cluster, "gc_slow", 1, timeout=120)
    assert job.state == pps.JOB_SUCCESS, job
    assert get(cluster, "gc_slow", "master", "/x") == slow_input
    assert get(cluster, "gc_stream", "master", "/streamed") == streamed
    ok(pachctl(cluster, "finish-commit", "gc_open", commit))
    assert get(cluster, "gc_open", "master", "/pending") == pending_big
    assert get(cluster, "gc_open", "master", "/tiny") == b"tiny\n"

    # Quiet again: collect, then a second collection finds nothing.
    time.sleep(1.5)
    collect(cluster)
    assert collect(cluster)["deleted"] == 0
    assert get(cluster, "gc_stream", "master", "/streamed") == streamed
    assert get(cluster, "gc_slow", "master", "/x") == slow_input


def test_gc_result_as_json(cluster: Cluster) -> None:
    result = json.loads(ok(pachctl(cluster, "garbage-collect", "--raw", "-m", "1MB")))
    assert "kept" in result and float(result["cutoff"]) > 0, result
    bad = pachctl(cluster, "garbage-collect", "-m", "lots")
    assert bad.returncode != 0 and b"invalid size" in bad.stderr


# --- the S3 backend's part --------------------------------------------------------


@pytest.fixture
async def s3(s3_server: S3Server) -> AsyncIterator[S3ObjectStore]:  # noqa: F811
    store = S3ObjectStore(
        bucket="pach-gc-test",
        endpoint_url=s3_server.endpoint,
        region=s3_server.region,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        prefix=f"gc-{secrets.token_hex(4)}",
    )
    await store.ensure_bucket()
    try:
        yield store
    finally:
        await store.close()


@pytest.mark.s3
async def test_s3_modified_touch_and_delete_if_older(s3: S3ObjectStore) -> None:
    await s3.put("chunks/ab/x", b"content")
    stat = await s3.stat("chunks/ab/x")
    assert abs(stat.modified - time.time()) < 120
    [listed] = [i async for i in s3.list("chunks/")]
    assert listed.modified == pytest.approx(stat.modified, abs=1.0)
    await asyncio.sleep(1.1)  # LastModified has whole seconds
    assert await s3.touch("chunks/ab/x") is True
    assert (await s3.stat("chunks/ab/x")).modified > stat.modified
    assert await s3.get("chunks/ab/x") == b"content"
    assert await s3.touch("chunks/ab/missing") is False
    assert not await s3.exists("chunks/ab/missing")
    touched = (await s3.stat("chunks/ab/x")).modified
    assert await s3.delete_if_older("chunks/ab/x", touched) is False  # not older
    assert await s3.delete_if_older("chunks/ab/x", touched + 1) is True
    assert not await s3.exists("chunks/ab/x")
