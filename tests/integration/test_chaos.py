"""A bounded chaos run against the real cluster.

Three clients put files (each put-file its own auto-commit on ``master``)
while a pipeline copies every file to its output, and a killer sends
SIGKILL to a random process every few seconds: pfs, pps, the gateway, a
pipeline worker and nats-server, each kind at least twice. Afterwards:

- every put the cluster acknowledged is on the branch head, byte for byte;
- no commit is left open once the put lease has passed;
- every job finished exactly once (one job per input commit, none failed)
  and the output head holds exactly the input head's files.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from libs.api.pps import pps_pb2 as pps
from libs.api.pps import pps_pb2_grpc
from tests.support.cluster import Cluster, running, wait_until

LEASE_S = 3.0
SEED = 20261207
KINDS = ("pfs-0", "pps-0", "gateway-0", "worker", "nats")
KILLS_PER_KIND = 2
KILL_EVERY_S = (2.5, 4.0)
CLIENTS = 3
PUT_EVERY_S = 0.6
SRC = "chaos_in"
PIPELINE = "chaos_cp"
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from running(
        Path(tmp_path_factory.mktemp("chaos")) / "data",
        PACH_LOG_LEVEL="warning",
        PACH_PUT_LEASE_MS=str(int(LEASE_S * 1000)),
        PACH_PPS_ACK_WAIT_S="3",
    )


def _channel(cluster: Cluster) -> grpc.Channel:
    return grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}")


def _retrying(call: object, req: object, timeout: float = 90.0) -> object:
    """A unary call that may meet a restarting process: retried while it is
    UNAVAILABLE (idempotent reads and set-up calls only)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call(req, timeout=20)  # type: ignore[operator]
        except grpc.RpcError as err:
            if err.code() not in RETRYABLE or time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def _retrying_stream(call: object, req: object, timeout: float = 90.0) -> list[object]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return list(call(req, timeout=30))  # type: ignore[operator]
        except grpc.RpcError as err:
            if err.code() not in RETRYABLE or time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@dataclass
class Client:
    """One client putting files until told to stop; it remembers what the
    cluster acknowledged."""

    index: int
    cluster: Cluster
    stop: threading.Event
    acked: dict[str, bytes] = field(default_factory=dict)
    failed: int = 0

    def run(self) -> None:
        n = 0
        with _channel(self.cluster) as channel:
            api = pfs_pb2_grpc.APIStub(channel)
            while not self.stop.is_set():
                path = f"/c{self.index}-{n:04d}"
                data = f"client {self.index} put {n}\n".encode() * (1 + n % 7)
                req = pfs.PutFileRequest(
                    file=pfs.File(
                        commit=pfs.Commit(repo=pfs.Repo(name=SRC), id="master"), path=path
                    ),
                    value=data,
                )
                try:
                    api.PutFile(iter([req]), timeout=15)
                except grpc.RpcError:
                    self.failed += 1  # not acknowledged: it may or may not have landed
                else:
                    self.acked[path] = data
                n += 1
                self.stop.wait(PUT_EVERY_S)


def _kill(cluster: Cluster, kind: str) -> bool:
    """SIGKILL one process of the kind and wait until it is back; False if
    there was none to kill right now."""
    if kind == "worker":
        workers = cluster.workers(PIPELINE)
        if not workers:
            return False
        os.kill(workers[0].pid, signal.SIGKILL)
        wait_until(lambda: any(w.pid != workers[0].pid for w in cluster.workers(PIPELINE)), 60)
        return True
    state = cluster.state()
    pid = state["nats"]["pid"] if kind == "nats" else state["processes"][kind]["pid"]
    if not pid:
        return False
    os.kill(pid, signal.SIGKILL)

    def back() -> bool:
        st = cluster.state()
        now = st["nats"]["pid"] if kind == "nats" else st["processes"][kind]["pid"]
        return now not in (pid, None)

    wait_until(back, 60)
    return True


def _set_up(cluster: Cluster) -> None:
    with _channel(cluster) as channel:
        api = pfs_pb2_grpc.APIStub(channel)
        ppsapi = pps_pb2_grpc.APIStub(channel)
        _retrying(api.CreateRepo, pfs.CreateRepoRequest(repo=pfs.Repo(name=SRC)))
        _retrying(
            ppsapi.CreatePipeline,
            pps.CreatePipelineRequest(
                pipeline=pps.Pipeline(name=PIPELINE),
                transform=pps.Transform(
                    cmd=["sh"], stdin=[f'for f in /pfs/{SRC}/*; do cp "$f" /pfs/out/; done']
                ),
                input=pps.Input(atom=pps.AtomInput(repo=SRC, glob="/*")),
                parallelism_spec=pps.ParallelismSpec(constant=1),
            ),
        )


def _head_files(api: pfs_pb2_grpc.APIStub, commit: pfs.Commit) -> dict[str, bytes]:
    listed = _retrying(api.ListFile, pfs.ListFileRequest(file=pfs.File(commit=commit, path="/")))
    assert isinstance(listed, pfs.FileInfos)
    out: dict[str, bytes] = {}
    for info in listed.file_info:
        req = pfs.GetFileRequest(file=pfs.File(commit=commit, path=info.file.path))
        out[info.file.path] = b"".join(r.value for r in _retrying_stream(api.GetFile, req))  # type: ignore[attr-defined]
    return out


def _open_commits(api: pfs_pb2_grpc.APIStub, repo: str) -> list[str]:
    infos = _retrying(api.ListCommit, pfs.ListCommitRequest(repo=pfs.Repo(name=repo)))
    assert isinstance(infos, pfs.CommitInfos)
    return [c.commit.id for c in infos.commit_info if not c.HasField("finished")]


def _jobs(ppsapi: pps_pb2_grpc.APIStub) -> list[pps.JobInfo]:
    infos = _retrying(ppsapi.ListJob, pps.ListJobRequest(pipeline=pps.Pipeline(name=PIPELINE)))
    assert isinstance(infos, pps.JobInfos)
    return list(infos.job_info)


def _history(api: pfs_pb2_grpc.APIStub, jobs: list[pps.JobInfo], src_head: str) -> str:
    """The output branch's commits and the jobs, for a failure's message."""
    infos = _retrying(api.ListCommit, pfs.ListCommitRequest(repo=pfs.Repo(name=PIPELINE)))
    assert isinstance(infos, pfs.CommitInfos)
    lines = [f"source head {src_head}"]
    for c in infos.commit_info:
        prov = ",".join(p.id[:8] for p in c.provenance)
        lines.append(
            f"commit {c.commit.id[:8]} parent {c.parent_commit.id[:8]} "
            f"finished {c.HasField('finished')} tree {c.tree.hash[:8]} provenance {prov}"
        )
    for j in jobs:
        inputs = ",".join(c.id[:8] for c in _input_commits(j))
        lines.append(
            f"job {j.job.id[:8]} {pps.JobState.Name(j.state)} output {j.output_commit.id[:8]} "
            f"inputs {inputs} processed {j.data_processed} skipped {j.data_skipped}"
        )
    return "\n".join(lines)


def test_kill_9_chaos_loses_nothing_acknowledged(cluster: Cluster) -> None:
    _set_up(cluster)
    rng = random.Random(SEED)
    schedule = [kind for kind in KINDS for _ in range(KILLS_PER_KIND)]
    rng.shuffle(schedule)

    stop = threading.Event()
    clients = [Client(i, cluster, stop) for i in range(CLIENTS)]
    threads = [threading.Thread(target=c.run, daemon=True) for c in clients]
    for t in threads:
        t.start()
    killed: dict[str, int] = dict.fromkeys(KINDS, 0)
    try:
        time.sleep(3)  # some commits and a running job before the first kill
        while schedule:
            kind = schedule.pop(0)
            if _kill(cluster, kind):
                killed[kind] += 1
            else:
                schedule.append(kind)  # nothing of that kind right now: later
            time.sleep(rng.uniform(*KILL_EVERY_S))
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert all(n >= KILLS_PER_KIND for n in killed.values()), killed
    acked = {path: data for c in clients for path, data in c.acked.items()}
    assert len(acked) >= 20, f"too few puts acknowledged to judge: {len(acked)}"

    with _channel(cluster) as channel:
        api = pfs_pb2_grpc.APIStub(channel)
        ppsapi = pps_pb2_grpc.APIStub(channel)
        # Nothing half-open: every commit is finished once the lease has passed.
        deadline = time.monotonic() + LEASE_S + 10
        while (left := _open_commits(api, SRC)) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert left == [], f"open commits left after the lease: {left}"

        # Every acknowledged put is on the head, byte for byte.
        head = _head_files(api, pfs.Commit(repo=pfs.Repo(name=SRC), id="master"))
        missing = sorted(p for p in acked if p not in head)
        assert not missing, f"{len(missing)} acknowledged puts lost, e.g. {missing[:5]}"
        wrong = sorted(p for p, data in acked.items() if head[p] != data)
        assert not wrong, f"acknowledged puts with other contents: {wrong[:5]}"

        # Every job finishes, once per input commit, and the output is right.
        src_head = _retrying(
            api.InspectCommit,
            pfs.InspectCommitRequest(commit=pfs.Commit(repo=pfs.Repo(name=SRC), id="master")),
        )
        assert isinstance(src_head, pfs.CommitInfo)

        def drained() -> bool:
            jobs = _jobs(ppsapi)
            finished = all(
                j.state in (pps.JOB_SUCCESS, pps.JOB_FAILURE, pps.JOB_KILLED) for j in jobs
            )
            latest = [j for j in jobs if any(c.id == src_head.commit.id for c in _input_commits(j))]
            return finished and bool(latest)

        wait_until(drained, 240)
        jobs = _jobs(ppsapi)
        failed = [(j.job.id, j.state, j.reason) for j in jobs if j.state != pps.JOB_SUCCESS]
        assert not failed, failed[:5]
        per_input: dict[str, list[str]] = {}
        for j in jobs:
            for c in _input_commits(j):
                per_input.setdefault(c.id, []).append(j.job.id)
        twice = {cid: ids for cid, ids in per_input.items() if len(ids) > 1}
        assert not twice, f"input commits with more than one job: {list(twice.items())[:3]}"

        out = _head_files(api, pfs.Commit(repo=pfs.Repo(name=PIPELINE), id="master"))
        assert out == head, (
            sorted(set(head) - set(out))[:5],
            sorted(set(out) - set(head))[:5],
            _history(api, jobs, src_head.commit.id),
        )
    print(
        f"chaos: kills {killed}, puts acknowledged {len(acked)}, "
        f"failed {sum(c.failed for c in clients)}, jobs {len(jobs)}"
    )


def _input_commits(job: pps.JobInfo) -> list[pfs.Commit]:
    """The commits of the input repo a job ran on (its atom input's commit)."""
    atom = job.input.atom
    return [pfs.Commit(repo=pfs.Repo(name=SRC), id=atom.commit)] if atom.repo == SRC else []
