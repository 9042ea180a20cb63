"""Restore as a user sees it: ``pachctl restore < file`` into a running,
empty cluster, timed until the command returns, which is when pfs and pps
have rebuilt their read models from the restored log; then the first
answers of the restored cluster, and ``pachctl extract --no-objects >
file`` of it (the same log back out through the gateway).

The log is pfs-shaped and real enough for pfs's projections to do their
whole job: ``REPOS`` repos, each with a line of commits on ``master``; a
commit is ``[CommitStarted, BranchSet]`` and ``[CommitFinished]`` on the
repo's subject and one batch of ``FilePut`` on the commit's (7 events in 3
messages). It is built with ``append_many`` into a nats-server of its own
and extracted to a file without objects (no query below reads a file).
``PACH_BENCH_RESTORE_EVENTS`` changes the size (default 1,000,000).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import nats
from google.protobuf.message import Message

from libs.api.events import pfs_pb2 as ev
from libs.config import Config
from libs.errors import PachError
from libs.events import NEW, AggregateRef, Append, EventStore, Position, ensure_stream
from programs.cluster.natsserver import NatsServer
from services.admin.app.extract import extract_frames
from services.admin.domain import catalog
from tests.bench import BenchContext, Result
from tests.bench.bench_backup import _write
from tests.support.cluster import ROOT, Cluster

REPOS = 100
EVENTS_PER_COMMIT = 7
FILES_PER_COMMIT = 4


def _commit_id(repo: int, n: int) -> str:
    return f"{repo:08x}{n:024x}"


def _puts(repo: int, n: int) -> list[Message]:
    return [
        ev.FilePut(
            path=f"/data/{n:06d}/file-{i}.csv",
            refs=[ev.DataRef(chunk=f"{repo * 1_000_003 + n * 7 + i:064x}", length=4096)],
        )
        for i in range(FILES_PER_COMMIT)
    ]


async def _build(store: EventStore, commits_per_repo: int) -> int:
    """Append the log; returns the number of events."""
    repos = [AggregateRef("pfs", "repo", f"repo-{r:03d}") for r in range(REPOS)]
    at: dict[int, Position] = {}

    async def append(items: list[tuple[int, list[Message]]]) -> None:
        batch = [Append(repos[r], events, at.get(r, NEW)) for r, events in items]
        for (r, _), result in zip(items, await store.append_many(batch), strict=True):
            if isinstance(result, PachError):
                raise result
            at[r] = result.position

    await append([(r, [ev.RepoCreated(name=repos[r].id)]) for r in range(REPOS)])
    for n in range(commits_per_repo):
        parent = [_commit_id(r, n - 1) if n else "" for r in range(REPOS)]
        await append(
            [
                (
                    r,
                    [
                        ev.CommitStarted(id=_commit_id(r, n), branch="master", parent=parent[r]),
                        ev.BranchSet(name="master", head=_commit_id(r, n)),
                    ],
                )
                for r in range(REPOS)
            ]
        )
        writes = [
            Append(AggregateRef("pfs", "commit", _commit_id(r, n)), _puts(r, n), NEW)
            for r in range(REPOS)
        ]
        for result in await store.append_many(writes):
            if isinstance(result, PachError):
                raise result
        await append(
            [
                (r, [ev.CommitFinished(id=_commit_id(r, n), size_bytes=FILES_PER_COMMIT * 4096)])
                for r in range(REPOS)
            ]
        )
    return REPOS * (1 + commits_per_repo * EVENTS_PER_COMMIT)


async def _make_extract(work: Path, commits_per_repo: int) -> tuple[Path, int]:
    server = NatsServer(store_dir=work / "nats-source").start()
    try:
        nc = await nats.connect(server.url)
        await ensure_stream(nc.jetstream(), Config())
        reg = catalog.cluster_registry()
        store = EventStore.from_config(nc, reg, Config())
        events = await _build(store, commits_per_repo)
        await store.close()
        path = work / "cluster.pachext"
        await _write(path, extract_frames(nc.jetstream(), None, reg, objects=False))
        await nc.close()
    finally:
        server.stop()
    return path, events


async def _pachctl(
    cluster: Cluster, *args: str, stdin: Path | None = None, stdout: Path | None = None
) -> bytes:
    """Run pachctl against ``cluster``; its output, or nothing when written to ``stdout``."""
    env = {
        **os.environ,
        "PACHD_ADDRESS": f"127.0.0.1:{cluster.grpc_port}",
        "PYTHONPATH": str(ROOT),
    }
    source = stdin if stdin is not None else Path(os.devnull)
    sink = stdout if stdout is not None else Path(os.devnull)
    with source.open("rb") as f, sink.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "programs.pachctl",
            *args,
            stdin=f,
            stdout=out if stdout else asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        output, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"pachctl {' '.join(args)}: {err.decode().strip()}")
    return output or b""


async def _timed(cluster: Cluster, *args: str, stdin: Path | None = None) -> tuple[float, bytes]:
    started = time.perf_counter()
    out = await _pachctl(cluster, *args, stdin=stdin)
    return time.perf_counter() - started, out


async def run(ctx: BenchContext) -> list[Result]:
    wanted = int(os.environ.get("PACH_BENCH_RESTORE_EVENTS", "1000000"))
    commits_per_repo = max(1, (wanted // REPOS - 1) // EVENTS_PER_COMMIT)
    work = ctx.work_dir / "backup-cluster"
    work.mkdir(parents=True, exist_ok=True)
    path, events = await _make_extract(work, commits_per_repo)
    mb = path.stat().st_size / 1e6

    cluster = Cluster(work / "data", PACH_OBJECT_BACKEND="local", PACH_LOG_LEVEL="warning")
    cluster.start()
    try:
        await asyncio.to_thread(cluster.wait_ready, 60)
        restore_s, _ = await _timed(cluster, "restore", stdin=path)
        list_repo_s, out = await _timed(cluster, "list-repo", "--raw")
        repos = out.count(b'"repo"')
        assert repos == REPOS, f"{repos} repos listed, {REPOS} restored"
        last = _commit_id(REPOS - 1, commits_per_repo - 1)
        inspect_s, out = await _timed(cluster, "inspect-commit", "repo-099", "master", "--raw")
        assert json.loads(out)["commit"]["id"] == last, out[:200]
        list_commit_s, out = await _timed(cluster, "list-commit", "repo-000", "--raw")
        listed = out.count(b'"finished"')
        assert listed == commits_per_repo, f"{listed} commits listed, {commits_per_repo} restored"
        again = work / "again.pachext"
        started = time.perf_counter()
        await _pachctl(cluster, "extract", "--no-objects", stdout=again)
        extract_s = time.perf_counter() - started
        assert again.stat().st_size >= path.stat().st_size  # the same log, a new header
    finally:
        cluster.stop()
    note = f"{events:,} events, {REPOS} repos x {commits_per_repo:,} commits, {mb:,.0f} MB"
    return [
        Result(
            "backup: pachctl restore into a cluster (+ read models)",
            events / restore_s,
            "events/s",
            15_000,
            note=note,
        ),
        Result("backup: pachctl restore into a cluster (+ read models)", mb / restore_s, "MB/s"),
        Result(
            "backup: pachctl restore into a cluster (+ read models)",
            restore_s,
            "s",
            note=note,
        ),
        Result("  then pachctl extract --no-objects", events / extract_s, "events/s", 50_000),
        Result("  then pachctl extract --no-objects", mb / extract_s, "MB/s"),
        Result("  then pachctl list-repo", list_repo_s * 1000, "ms"),
        Result("  then pachctl inspect-commit (first load of a repo)", inspect_s * 1000, "ms"),
        Result(
            f"  then pachctl list-commit ({commits_per_repo:,} commits)",
            list_commit_s * 1000,
            "ms",
        ),
    ]
