"""Many clients, each putting one small file as its own commit, over gRPC to
the gateway of a real cluster (``python -m programs.cluster``), the way
``pachctl put-file repo master -f file`` and python-pachyderm's
``put_file_bytes(repo, "master", ...)`` do it: one PutFile stream naming a
branch, so pfs opens and finishes a commit for it.

* the floor: one client alone, one put after another, p50;
* 32 clients at once onto one repo's master (contended: every put its own
  commit on one branch), p50 and p99 over several bursts, beside the
  targets (p50 < 150 ms, p99 < 500 ms);
* 32 clients at once, each onto its own repo (uncontended branches);
* 32 clients at once, each start-commit / put-file / finish-commit on its
  own repo (the python-pachyderm ``with client.commit(...)`` shape).

Every burst checks that each put made its own commit.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import grpc.aio

from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from tests.bench import BenchContext, Result
from tests.support.cluster import Cluster

CLIENTS = 32
BURSTS = 5
SINGLE = 40
P50_TARGET_MS = 150.0
P99_TARGET_MS = 500.0


def _put(repo: str, ref: str, path: str) -> list[pfs.PutFileRequest]:
    commit = pfs.Commit(repo=pfs.Repo(name=repo), id=ref)
    return [pfs.PutFileRequest(file=pfs.File(commit=commit, path=path), value=b"x" * 100)]


def _pct(times: list[float], q: float) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


async def _put_file(api: pfs_pb2_grpc.APIAsyncStub, repo: str, path: str) -> float:
    start = time.perf_counter()
    await api.PutFile(iter(_put(repo, "master", path)), timeout=120)
    return time.perf_counter() - start


async def _start_put_finish(api: pfs_pb2_grpc.APIAsyncStub, repo: str, path: str) -> float:
    start = time.perf_counter()
    commit = await api.StartCommit(
        pfs.StartCommitRequest(parent=pfs.Commit(repo=pfs.Repo(name=repo)), branch="master"),
        timeout=120,
    )
    await api.PutFile(iter(_put(repo, commit.id, path)), timeout=120)
    await api.FinishCommit(pfs.FinishCommitRequest(commit=commit), timeout=120)
    return time.perf_counter() - start


async def _commits(api: pfs_pb2_grpc.APIAsyncStub, repo: str) -> int:
    listed = await api.ListCommit(pfs.ListCommitRequest(repo=pfs.Repo(name=repo)))
    return len(listed.commit_info)


async def measure(grpc_port: int, bursts: int = BURSTS) -> dict[str, list[float]]:
    """Seconds per put: ``single``, ``shared``, ``separate``, ``explicit``."""
    out: dict[str, list[float]] = {"single": [], "shared": [], "separate": [], "explicit": []}
    # One channel per client, as separate processes would have.
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") for _ in range(CLIENTS)]
    try:
        apis = [pfs_pb2_grpc.APIStub(c) for c in channels]
        api = apis[0]
        repos = [f"sep{i}" for i in range(CLIENTS)]
        for name in ["solo", "shared", *repos, *(f"exp{i}" for i in range(CLIENTS))]:
            await api.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name=name)))
        for i in range(5):  # warm up every channel and the services
            await asyncio.gather(*(_put_file(a, "solo", f"/w{i}-{j}") for j, a in enumerate(apis)))
        for i in range(SINGLE):
            out["single"].append(await _put_file(api, "solo", f"/s{i}"))
        for b in range(bursts):
            out["shared"] += await asyncio.gather(
                *(_put_file(a, "shared", f"/b{b}-c{i}") for i, a in enumerate(apis))
            )
            out["separate"] += await asyncio.gather(
                *(_put_file(a, repos[i], f"/b{b}") for i, a in enumerate(apis))
            )
            out["explicit"] += await asyncio.gather(
                *(_start_put_finish(a, f"exp{i}", f"/b{b}") for i, a in enumerate(apis))
            )
        made = await _commits(api, "shared")
        if made != bursts * CLIENTS:
            raise AssertionError(f"{bursts * CLIENTS} puts onto one branch made {made} commits")
        for name in repos:
            if await _commits(api, name) != bursts:
                raise AssertionError(f"{bursts} puts onto {name} did not make {bursts} commits")
    finally:
        for c in channels:
            await c.close()
    return out


def rows(times: dict[str, list[float]]) -> list[Result]:
    floor = statistics.median(times["single"]) * 1000
    out = [Result("1 client put-file onto a branch, p50 (floor)", round(floor, 1), "ms")]
    for key, label in [
        ("shared", f"{CLIENTS} clients put-file onto one branch"),
        ("separate", f"{CLIENTS} clients put-file, each onto its own repo"),
        ("explicit", f"{CLIENTS} clients start/put/finish-commit, own repos"),
    ]:
        p50, p99 = _pct(times[key], 0.5), _pct(times[key], 0.99)
        is_target = key != "explicit"
        out += [
            Result(
                f"{label}, p50",
                round(p50, 1),
                "ms",
                P50_TARGET_MS if is_target else None,
                higher_is_better=False,
                note=f"{p50 / floor:.1f}x the floor" if key == "shared" else "",
            ),
            Result(
                f"{label}, p99",
                round(p99, 1),
                "ms",
                P99_TARGET_MS if is_target else None,
                higher_is_better=False,
            ),
        ]
    return out


async def run(ctx: BenchContext) -> list[Result]:
    work = ctx.work_dir / "clients"
    work.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(work / "data", PACH_LOG_LEVEL="warning")
    cluster.start()
    try:
        await asyncio.to_thread(cluster.wait_ready, 60)
        return rows(await measure(cluster.grpc_port))
    finally:
        await asyncio.to_thread(cluster.kill)
