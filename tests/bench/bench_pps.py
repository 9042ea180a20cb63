"""PPS end to end against a running cluster (``python -m programs.cluster``),
each row next to the floor it is measured against in the same run.

* the bubblewrap spawn floor: a sandbox running ``true`` (the least a datum
  costs), median of many;
* 10,000 trivial datums (``true`` per datum, one file each) in one job, with
  one worker per core: datums/s, and ms/datum next to twice the spawn floor;
* commit finished -> job running: the time from the input commit's
  ``CommitFinished`` to the job's ``JobStarted``, both seen on NATS by the
  benchmark (one clock), p50 over several commits;
* end-to-end latency of a 1-datum pipeline: from the FinishCommit call on
  the input to the output commit's ``CommitFinished`` seen on NATS, p50;
* a job where 1 of 100,000 datums changed (the 100,000-datum job runs first
  to fill the skip index; ``PACH_BENCH_PPS_BIG``: the datum count, default
  100,000, 0 leaves these rows out): the job's own time (``JobInfo.started``,
  which is when the job was created, to ``finished``; its planning, the
  listing of the datums and the skip-index lookups, happens in it), and, on
  the benchmark's clock, from the input commit's ``CommitFinished`` to the
  job's ``JobCreated`` and to its ``JobFinished`` (``PACH_BENCH_PPS_PROFILE``:
  a path; py-spy from ``.venv-bench`` records the pps and pfs services there,
  ``-pps``/``-pfs`` before the suffix, while that job runs); then the job
  update-pipeline runs (every datum skipped, planned by listing them all and
  reading the whole skip index, as every job was planned before: that cost
  in the same run);
* N one-file datums that each copy their file to ``/pfs/out``, one worker
  per core, create-pipeline -> job finished, in datums/s next to two floors
  measured in the same run on the same files: ``xargs -P<cores>`` starting
  one fresh bubblewrap sandbox per datum doing the same copy, and plain
  ``xargs -P<cores> sh -c cp``; the ratios are rows of their own
  (``PACH_BENCH_PPS_WRITERS``: N, default 2,000; 0 leaves them out).
  ``PACH_BENCH_PPS_TRIVIAL=0`` leaves the 10,000 trivial datums out.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import nats

from libs.api.events import pfs_pb2 as pfs_events
from libs.api.events import pps_pb2 as pps_events
from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from libs.api.pps import pps_pb2 as pps
from libs.api.pps import pps_pb2_grpc
from libs.events.envelope import decode_batch
from services.pps.domain.events import registry as pps_registry
from services.pps.runners.local import LocalRunner
from tests.bench import BenchContext, Result
from tests.support.cluster import Cluster

TRIVIAL_DATUMS = int(os.environ.get("PACH_BENCH_PPS_TRIVIAL", "10000"))
WRITING_DATUMS = int(os.environ.get("PACH_BENCH_PPS_WRITERS", "2000"))
BIG_DATUMS = int(os.environ.get("PACH_BENCH_PPS_BIG", "100000"))
PROFILE = os.environ.get("PACH_BENCH_PPS_PROFILE", "")
LATENCY_SAMPLES = 15


def _registry() -> Any:
    reg = pps_registry()
    reg.register_module(pfs_events)
    return reg


class Events:
    """Every pfs/pps event as it is published, with the time it arrived."""

    def __init__(self) -> None:
        self.reg = _registry()
        self.seen: list[tuple[float, str, Any]] = []
        self._changed = asyncio.Event()
        self.nc: Any = None

    async def start(self, url: str) -> None:
        self.nc = await nats.connect(url)
        await self.nc.subscribe("ev.pfs.repo.>", cb=self._on)
        await self.nc.subscribe("ev.pps.job.>", cb=self._on)

    async def _on(self, msg: Any) -> None:
        now = time.perf_counter()
        try:
            events = decode_batch(msg.data, 0, self.reg)
        except Exception:
            return
        for e in events:
            self.seen.append((now, e.envelope.aggregate_id, e.event))
        self._changed.set()

    async def wait(self, match: Callable[[str, Any], bool], timeout: float = 600) -> float:
        """The arrival time of the first event (from now on) matching."""
        start = len(self.seen)
        deadline = time.monotonic() + timeout
        while True:
            for t, agg, event in self.seen[start:]:
                if match(agg, event):
                    return t
            self._changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("event not seen")
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                continue

    def mark(self) -> int:
        return len(self.seen)

    def first_after(self, mark: int, match: Callable[[str, Any], bool]) -> float | None:
        for t, agg, event in self.seen[mark:]:
            if match(agg, event):
                return t
        return None

    async def close(self) -> None:
        if self.nc is not None:
            await self.nc.close()


def _stubs(cluster: Cluster) -> tuple[pfs_pb2_grpc.APIStub, pps_pb2_grpc.APIStub]:
    channel = grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}")
    return pfs_pb2_grpc.APIStub(channel), pps_pb2_grpc.APIStub(channel)


def _fill(api: pfs_pb2_grpc.APIStub, repo: str, n: int, tag: bytes = b"") -> pfs.Commit:
    """One commit of ``n`` one-line files (100 directories)."""
    req = pfs.StartCommitRequest(parent=pfs.Commit(repo=pfs.Repo(name=repo)), branch="master")
    commit: pfs.Commit = api.StartCommit(req, timeout=60)
    api.PutFile(
        (
            pfs.PutFileRequest(
                file=pfs.File(commit=commit, path=f"/f{i:06}"), value=b"%d%s\n" % (i, tag)
            )
            for i in range(n)
        ),
        timeout=1200,
    )
    api.FinishCommit(pfs.FinishCommitRequest(commit=commit), timeout=1200)
    return commit


def _pipeline(ppsapi: pps_pb2_grpc.APIStub, name: str, repo: str, glob: str) -> None:
    ppsapi.CreatePipeline(
        pps.CreatePipelineRequest(
            pipeline=pps.Pipeline(name=name),
            transform=pps.Transform(cmd=["true"]),
            input=pps.Input(atom=pps.AtomInput(repo=repo, glob=glob)),
            parallelism_spec=pps.ParallelismSpec(coefficient=1.0),
        ),
        timeout=120,
    )


def _job_finished(pipeline_jobs: set[str]) -> Callable[[str, Any], bool]:
    def match(agg: str, event: Any) -> bool:
        return isinstance(event, pps_events.JobFinished) and agg in pipeline_jobs

    return match


async def _wait_job_done(
    ppsapi: pps_pb2_grpc.APIStub,
    pipeline: str,
    count: int,
    timeout: float = 3600,
    poll: float = 0.2,
) -> pps.JobInfo:
    """The newest job once the pipeline has ``count`` jobs, all finished."""
    deadline = time.monotonic() + timeout
    req = pps.ListJobRequest(pipeline=pps.Pipeline(name=pipeline))
    while time.monotonic() < deadline:
        infos = await asyncio.to_thread(ppsapi.ListJob, req, timeout=60)
        jobs = list(infos.job_info)
        if len(jobs) >= count and all(
            j.state in (pps.JOB_SUCCESS, pps.JOB_FAILURE, pps.JOB_KILLED) for j in jobs
        ):
            job: pps.JobInfo = jobs[0]
            assert job.state == pps.JOB_SUCCESS, job.reason
            return job
        await asyncio.sleep(poll)
    raise TimeoutError(f"{pipeline}: jobs did not finish")


def _seconds(job: pps.JobInfo) -> float:
    return (job.finished.ToNanoseconds() - job.started.ToNanoseconds()) / 1e9


def _bwrap_floor_args(inputs: Path, outputs: Path) -> list[str]:
    """A fresh bubblewrap sandbox for one copy: the system directories
    read-only, its own namespaces (no network), the input read-only and the
    output writable under /pfs."""
    args = ["bwrap", "--unshare-all", "--die-with-parent"]
    for name in ("usr", "bin", "sbin", "lib", "lib32", "lib64", "etc"):
        path = Path("/" + name)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    return [*args, "--ro-bind", str(inputs), "/pfs/in", "--bind", str(outputs), "/pfs/out"]


def _xargs_floor(work: Path, n: int, cores: int) -> tuple[float, float]:
    """Datums/s of ``xargs -P<cores>`` copying ``n`` one-line files, one
    per command: in a fresh bubblewrap sandbox each, and with plain ``sh``."""
    inputs, outputs = work / "floor-in", work / "floor-out"
    shutil.rmtree(inputs, ignore_errors=True)
    inputs.mkdir(parents=True)
    names = []
    for i in range(n):
        (inputs / f"f{i:06}").write_bytes(b"%d\n" % i)
        names.append(f"f{i:06}")
    listing = "\n".join(names).encode() + b"\n"
    rates = []
    for sandboxed in (True, False):
        shutil.rmtree(outputs, ignore_errors=True)
        outputs.mkdir()
        if sandboxed:
            cmd = [*_bwrap_floor_args(inputs, outputs), "sh", "-c", "cp /pfs/in/{} /pfs/out/"]
        else:
            cmd = ["sh", "-c", f"cp {inputs}/{{}} {outputs}/"]
        started = time.perf_counter()
        subprocess.run(
            ["xargs", f"-P{cores}", "-I{}", *cmd], input=listing, check=True, timeout=3600
        )
        rates.append(n / (time.perf_counter() - started))
        assert len(list(outputs.iterdir())) == n
    shutil.rmtree(inputs, ignore_errors=True)
    shutil.rmtree(outputs, ignore_errors=True)
    return rates[0], rates[1]


async def _writing_datums(
    api: pfs_pb2_grpc.APIStub, ppsapi: pps_pb2_grpc.APIStub, work: Path, n: int
) -> list[Result]:
    """N datums each writing one file, next to the xargs floors of the same run."""
    cores = os.cpu_count() or 1
    api.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name="writers_in")))
    await asyncio.to_thread(_fill, api, "writers_in", n)
    bwrap_rate, sh_rate = await asyncio.to_thread(_xargs_floor, work, n, cores)
    started = time.perf_counter()
    ppsapi.CreatePipeline(
        pps.CreatePipelineRequest(
            pipeline=pps.Pipeline(name="writers"),
            transform=pps.Transform(cmd=["sh", "-c", "cp /pfs/writers_in/* /pfs/out/"]),
            input=pps.Input(atom=pps.AtomInput(repo="writers_in", glob="/*")),
            parallelism_spec=pps.ParallelismSpec(constant=cores),
        ),
        timeout=120,
    )
    job = await _wait_job_done(ppsapi, "writers", 1, poll=0.02)
    rate = n / (time.perf_counter() - started)
    assert job.data_processed == n, job
    return [
        Result(f"xargs -P{cores}: a fresh bwrap sandbox per copy ({n:,})", bwrap_rate, "datums/s"),
        Result(f"xargs -P{cores}: plain sh -c cp ({n:,})", sh_rate, "datums/s"),
        Result(
            f"pipeline: {n:,} datums writing one file, {cores} workers, create -> job finished",
            rate,
            "datums/s",
        ),
        Result("  ratio to the bwrap-per-datum floor", rate / bwrap_rate, "x", 1.0),
        Result("  ratio to plain xargs sh (stretch)", rate / sh_rate, "x", 0.5),
    ]


def _profilers(cluster: Cluster) -> list[subprocess.Popen[bytes]]:
    """py-spy recording the pps and pfs services into ``PROFILE`` with the
    service's name before its suffix (none: not asked)."""
    if not PROFILE:
        return []
    out = []
    target = Path(PROFILE)
    for service in ("pps", "pfs"):
        procs = cluster.state()["processes"].values()
        pid = next(p["pid"] for p in procs if p["service"] == service)
        path = target.with_name(f"{target.stem}-{service}{target.suffix}")
        cmd = [".venv-bench/bin/py-spy", "record", "-p", str(pid), "-o", str(path), "-r", "200"]
        if target.suffix == ".txt":
            cmd += ["-f", "raw"]
        out.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(1.0)  # attached before the job starts
    return out


async def _one_changed(
    api: pfs_pb2_grpc.APIStub, ppsapi: pps_pb2_grpc.APIStub, events: Events, cluster: Cluster
) -> list[Result]:
    """The second job of a pipeline over ``BIG_DATUMS`` one-file datums, after
    a commit that changes one file."""
    n = BIG_DATUMS
    api.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name="big_in")))
    await asyncio.to_thread(_fill, api, "big_in", n)
    _pipeline(ppsapi, "big", "big_in", "/*")
    first = await _wait_job_done(ppsapi, "big", 1, timeout=7200)
    results = [
        Result(f"pipeline: first job of {n:,} trivial datums", n / _seconds(first), "datums/s")
    ]
    req = pfs.StartCommitRequest(parent=pfs.Commit(repo=pfs.Repo(name="big_in")), branch="master")
    commit = api.StartCommit(req, timeout=60)
    put = pfs.PutFileRequest(file=pfs.File(commit=commit, path="/f000123"), value=b"changed\n")
    api.PutFile(iter([put]), timeout=60)
    spies = await asyncio.to_thread(_profilers, cluster)
    mark = events.mark()
    api.FinishCommit(pfs.FinishCommitRequest(commit=commit), timeout=60)
    await events.wait(lambda agg, e: agg == "big" and isinstance(e, pfs_events.CommitFinished))
    second = await _wait_job_done(ppsapi, "big", 2, poll=0.05)
    for spy in spies:
        spy.send_signal(2)
        spy.wait(60)
    assert second.data_processed == 1 and second.data_skipped == n - 1, second

    def input_done(agg: str, e: Any) -> bool:
        return agg == "big_in" and isinstance(e, pfs_events.CommitFinished) and e.id == commit.id

    def job_event(kind: type) -> Callable[[str, Any], bool]:
        return lambda agg, e: agg == second.job.id and isinstance(e, kind)

    # update-pipeline (same salt): its job skips every datum, planned by
    # listing them all and reading the whole skip index, as every job was
    # before plans came from the input's diff: that cost in the same run.
    update = pps.CreatePipelineRequest(
        pipeline=pps.Pipeline(name="big"),
        transform=pps.Transform(cmd=["true", "updated"]),
        input=pps.Input(atom=pps.AtomInput(repo="big_in", glob="/*")),
        parallelism_spec=pps.ParallelismSpec(coefficient=1.0),
        update=True,
    )
    ppsapi.CreatePipeline(update, timeout=120)
    third = await _wait_job_done(ppsapi, "big", 3, poll=0.05)
    assert third.data_processed == 0 and third.data_skipped == n, third

    t_input = events.first_after(mark, input_done)
    t_created = events.first_after(mark, job_event(pps_events.JobCreated))
    t_finished = events.first_after(mark, job_event(pps_events.JobFinished))
    assert t_input is not None and t_created is not None and t_finished is not None
    return [
        *results,
        Result(
            f"job where 1 of {n:,} datums changed (job created -> finished)",
            _seconds(second),
            "s",
            1.0,
            higher_is_better=False,
        ),
        Result("  input commit finished -> job created", t_created - t_input, "s"),
        Result("  input commit finished -> job finished", t_finished - t_input, "s", 1.0, False),
        Result(
            f"  job after update-pipeline ({n:,} skipped, planned in full as before)",
            _seconds(third),
            "s",
        ),
    ]


async def run(ctx: BenchContext) -> list[Result]:
    work = ctx.work_dir / "pps"
    work.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    floor = await LocalRunner().spawn_floor(runs=50)
    results.append(Result("bwrap spawn floor (sandbox running `true`)", floor * 1000, "ms"))

    cluster = Cluster(work / "data", PACH_OBJECT_BACKEND="local", PACH_LOG_LEVEL="warning")
    cluster.start()
    events = Events()
    try:
        await asyncio.to_thread(cluster.wait_ready, 60)
        await events.start(cluster.state()["nats"]["url"])
        api, ppsapi = _stubs(cluster)

        # --- N datums writing one file each, next to their xargs floors ------
        if WRITING_DATUMS > 0:
            results += await _writing_datums(api, ppsapi, work, WRITING_DATUMS)

        # --- 10,000 trivial datums ---------------------------------------------
        if TRIVIAL_DATUMS > 0:
            api.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name="trivial_in")))
            await asyncio.to_thread(_fill, api, "trivial_in", TRIVIAL_DATUMS)
            _pipeline(ppsapi, "trivial", "trivial_in", "/*")
            job = await _wait_job_done(ppsapi, "trivial", 1)
            secs = _seconds(job)
            results.append(
                Result(
                    f"pipeline: {TRIVIAL_DATUMS:,} trivial datums, {os.cpu_count()} workers",
                    TRIVIAL_DATUMS / secs,
                    "datums/s",
                    100.0,
                )
            )
            results.append(
                Result(
                    "pipeline: ms per trivial datum (floor: 2x spawn floor)",
                    secs * 1000 / TRIVIAL_DATUMS,
                    "ms",
                    round(2 * floor * 1000, 2),
                    higher_is_better=False,
                )
            )

        # --- latencies on a 1-datum pipeline -----------------------------------
        api.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name="one_in")))
        await asyncio.to_thread(_fill, api, "one_in", 1)
        _pipeline(ppsapi, "one", "one_in", "/")
        await _wait_job_done(ppsapi, "one", 1)
        to_running, end_to_end = [], []
        for i in range(LATENCY_SAMPLES):
            mark = events.mark()
            req = pfs.StartCommitRequest(
                parent=pfs.Commit(repo=pfs.Repo(name="one_in")), branch="master"
            )
            commit = api.StartCommit(req, timeout=60)
            put = pfs.PutFileRequest(file=pfs.File(commit=commit, path="/x"), value=b"%d" % i)
            api.PutFile(iter([put]), timeout=60)
            sent = time.perf_counter()
            api.FinishCommit(pfs.FinishCommitRequest(commit=commit), timeout=60)

            def finished(agg: str, e: Any, cid: str = commit.id) -> bool:
                return agg == "one_in" and isinstance(e, pfs_events.CommitFinished) and e.id == cid

            done_at = await events.wait(
                lambda agg, e: agg == "one" and isinstance(e, pfs_events.CommitFinished)
            )
            input_done = events.first_after(mark, finished)
            started = events.first_after(mark, lambda _a, e: isinstance(e, pps_events.JobStarted))
            assert input_done is not None and started is not None
            to_running.append(started - input_done)
            end_to_end.append(done_at - sent)
            await _wait_job_done(ppsapi, "one", i + 2)
        results.append(
            Result(
                "commit finished -> job running (p50)",
                statistics.median(to_running) * 1000,
                "ms",
                50.0,
                higher_is_better=False,
            )
        )
        results.append(
            Result(
                "1-datum pipeline end to end: finish input -> output finished (p50)",
                statistics.median(end_to_end) * 1000,
                "ms",
            )
        )

        # --- 1 of 100,000 datums changed --------------------------------------
        if BIG_DATUMS > 0:
            results += await _one_changed(api, ppsapi, events, cluster)
    finally:
        await events.close()
        cluster.kill()
    return results
