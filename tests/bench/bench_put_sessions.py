"""Put sessions (pfs decides the commit of a put-file), end to end against a
running cluster, each row next to a floor or peer from the same run:

* put-file of one small file onto a branch (pfs opens and finishes the
  commit), p50 over gRPC, next to the p50 of the cheapest gRPC call
  (InspectRepo) on the same channel; and the NATS requests it costs per
  file, counted by a subscriber on the cluster's NATS (before pfs owned the
  session: 5 — InspectBranch, InspectCommit, StartCommit, PutFileRefs,
  FinishCommit);
* 32 clients putting one file each onto one branch at once: every put its
  own commit, p50 and max;
* ``pachctl put-file -r`` of 100k x 1 KiB onto a branch (one auto commit)
  vs ``cp -r`` + ``sync`` of the same tree.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import grpc
import grpc.aio
import nats
from nats.aio.msg import Msg

from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from tests.bench import BenchContext, Result
from tests.support.cluster import ROOT, Cluster

SAMPLES = 60
CLIENTS = 32
SMALL_FILES = 100_000


def _put(branch: str, path: str, body: bytes) -> list[pfs.PutFileRequest]:
    commit = pfs.Commit(repo=pfs.Repo(name="one"), id=branch)
    return [pfs.PutFileRequest(file=pfs.File(commit=commit, path=path), value=body)]


async def _one_file_rows(cluster: Cluster) -> list[Result]:
    nc = await nats.connect(cluster.state()["nats"]["url"])
    requests = 0

    async def count(msg: Msg) -> None:
        nonlocal requests
        if not msg.subject.endswith(".Health"):  # the gateway's probes are not the put's
            requests += 1

    await nc.subscribe("cmd.pfs.>", cb=count)
    await nc.subscribe("qry.pfs.>", cb=count)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        api = pfs_pb2_grpc.APIStub(channel)
        await api.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name="one")))
        inspect = pfs.InspectRepoRequest(repo=pfs.Repo(name="one"))
        floor, puts = [], []
        for i in range(5):  # warm up
            await api.PutFile(iter(_put("warm", f"/w{i}", b"w")))
            await api.InspectRepo(inspect)
        for _ in range(SAMPLES):
            start = time.perf_counter()
            await api.InspectRepo(inspect)
            floor.append(time.perf_counter() - start)
        await nc.flush()
        requests = 0  # InspectRepo is a pfs query too: count only the puts
        for i in range(SAMPLES):
            start = time.perf_counter()
            await api.PutFile(iter(_put("master", f"/f{i:03d}", b"x" * 100)))
            puts.append(time.perf_counter() - start)
        await nc.flush()
        await asyncio.sleep(0.2)
    put_requests = requests
    await nc.close()
    p50, floor50 = statistics.median(puts), statistics.median(floor)
    return [
        Result("grpc InspectRepo p50 (floor)", round(floor50 * 1000, 2), "ms"),
        Result("put-file 1 small file onto a branch, p50", round(p50 * 1000, 2), "ms"),
        Result(
            "  put-file p50 / InspectRepo p50",
            round(p50 / floor50, 1),
            "x",
            25.0,
            higher_is_better=False,
        ),
        Result(
            "  NATS requests to pfs per put-file (was 5)",
            round(put_requests / SAMPLES, 2),
            "req",
            1.0,
            higher_is_better=False,
        ),
    ]


async def _concurrent_rows(cluster: Cluster) -> list[Result]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        api = pfs_pb2_grpc.APIStub(channel)
        await api.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name="many")))

        async def one(i: int) -> float | None:
            commit = pfs.Commit(repo=pfs.Repo(name="many"), id="master")
            msg = pfs.PutFileRequest(file=pfs.File(commit=commit, path=f"/c{i}"), value=b"y")
            start = time.perf_counter()
            try:
                await api.PutFile(iter([msg]), timeout=300)
            except grpc.aio.AioRpcError:
                return None
            return time.perf_counter() - start

        done = await asyncio.gather(*(one(i) for i in range(CLIENTS)))
        listed = await api.ListCommit(pfs.ListCommitRequest(repo=pfs.Repo(name="many")))
    commits = len(listed.commit_info)
    times = [t for t in done if t is not None] or [0.0]
    return [
        Result(
            f"{CLIENTS} concurrent put-files onto one branch: failed",
            CLIENTS - len([t for t in done if t is not None]),
            "puts",
            0.0,
            higher_is_better=False,
        ),
        Result(
            f"{CLIENTS} concurrent put-files onto one branch: commits made",
            commits,
            "commits",
            float(CLIENTS),
        ),
        Result("  p50 of the 32 puts", round(statistics.median(times) * 1000), "ms"),
        Result("  slowest of the 32 puts", round(max(times) * 1000), "ms"),
    ]


async def _timed(cmd: str, env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_shell(
        cmd, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"command failed: {cmd}: {err.decode()[-2000:]}")
    return time.perf_counter() - start


def _write_small(root: Path) -> None:
    body = os.urandom(1024 - 16)
    for d in range(100):
        sub = root / f"d{d:03}"
        sub.mkdir(parents=True)
        for i in range(SMALL_FILES // 100):
            (sub / f"f{i:04}").write_bytes((d * 1000 + i).to_bytes(16, "big") + body)
    os.sync()


async def _recursive_rows(cluster: Cluster, work: Path) -> list[Result]:
    small = work / "small"
    await asyncio.to_thread(_write_small, small)
    cp_secs = await _timed(f"cp -r {small} {work / 'copy'} && sync")
    shutil.rmtree(work / "copy")
    env = {**os.environ, "PACHD_ADDRESS": f"127.0.0.1:{cluster.grpc_port}", "PYTHONPATH": str(ROOT)}
    pachctl = f"{sys.executable} -m programs.pachctl"
    await _timed(f"{pachctl} create-repo small", env=env)
    secs = await _timed(f"{pachctl} put-file small master /in -r -f {small}", env=env)
    shutil.rmtree(small)
    return [
        Result("peer: cp -r 100k x 1 KiB + sync", round(SMALL_FILES / cp_secs), "files/s"),
        Result(
            "pachctl put-file -r 100k x 1 KiB onto a branch (one auto commit)",
            round(SMALL_FILES / secs),
            "files/s",
        ),
        Result(
            "  put-file -r / (cp -r + sync)",
            round(cp_secs / secs, 2),
            "x",
            note="higher is faster than cp",
        ),
    ]


async def run(ctx: BenchContext) -> list[Result]:
    work = ctx.work_dir / "put-sessions"
    work.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(work / "data", PACH_LOG_LEVEL="warning")
    cluster.start()
    try:
        await asyncio.to_thread(cluster.wait_ready, 60)
        results = await _one_file_rows(cluster)
        results += await _concurrent_rows(cluster)
        results += await _recursive_rows(cluster, work)
    finally:
        await asyncio.to_thread(cluster.kill)
    return results
