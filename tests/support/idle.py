"""An idle cluster, measured: pipelines whose first jobs finished, then
nothing happens. How much CPU its processes use (utime + stime from
/proc/<pid>/stat, summed over the launcher and every process under it:
nats-server, services, workers) and which warning-level lines they log."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import grpc

from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from libs.api.pps import pps_pb2 as pps
from libs.api.pps import pps_pb2_grpc
from tests.support.cluster import Cluster

_TICK = os.sysconf("SC_CLK_TCK")


def settle(cluster: Cluster, pipelines: int, repo: str = "idle") -> None:
    """``pipelines`` ``cp`` pipelines over one input repo, one commit, and
    wait until each one's job succeeded."""
    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        pfs_api, pps_api = pfs_pb2_grpc.APIStub(channel), pps_pb2_grpc.APIStub(channel)
        pfs_api.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name=repo)), timeout=30)
        for i in range(pipelines):
            pps_api.CreatePipeline(
                pps.CreatePipelineRequest(
                    pipeline=pps.Pipeline(name=f"{repo}-cp{i}"),
                    transform=pps.Transform(cmd=["sh"], stdin=[f"cp -r /pfs/{repo}/. /pfs/out/"]),
                    input=pps.Input(atom=pps.AtomInput(repo=repo, glob="/*")),
                ),
                timeout=120,
            )
        head = pfs.Commit(repo=pfs.Repo(name=repo))
        commit = pfs_api.StartCommit(
            pfs.StartCommitRequest(parent=head, branch="master"), timeout=30
        )
        put = pfs.PutFileRequest(file=pfs.File(commit=commit, path="/a"), value=b"a")
        pfs_api.PutFile(iter([put]), timeout=30)
        pfs_api.FinishCommit(pfs.FinishCommitRequest(commit=commit), timeout=60)
        jobs = list(pps_api.FlushJob(pps.FlushJobRequest(commits=[commit]), timeout=300))
    assert len(jobs) == pipelines, [j.pipeline.name for j in jobs]
    assert all(j.state == pps.JOB_SUCCESS for j in jobs), [j.reason for j in jobs]


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


def tree_pids(root: int) -> list[int]:
    """``root`` and every process under it."""
    tree, out, todo = _children(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += tree.get(pid, [])
    return out


def _cpu_ticks(pids: list[int]) -> dict[int, int]:
    ticks = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks[pid] = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks


def cpu_percent(pids: list[int], seconds: float) -> float:
    """CPU the processes ``pids`` used over the next ``seconds``, in % of one
    core (a process gone in between counts what it used until its last look)."""
    before = _cpu_ticks(pids)
    start = time.monotonic()
    time.sleep(seconds)
    after = _cpu_ticks(pids)
    elapsed = time.monotonic() - start
    used = sum(after.get(pid, t) - t for pid, t in before.items())
    return 100.0 * used / _TICK / elapsed


def log_lines(log: Path, offset: int = 0) -> list[dict[str, object]]:
    """The JSON lines of ``log`` after byte ``offset``."""
    found = []
    with open(log, "rb") as f:
        f.seek(offset)
        for raw in f:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict):
                found.append(line)
    return found


def warnings_in(log: Path, offset: int = 0) -> list[dict[str, object]]:
    """The warning-level (and worse) JSON lines of ``log`` after byte ``offset``."""
    bad = ("warning", "error", "critical")
    return [line for line in log_lines(log, offset) if line.get("level") in bad]
