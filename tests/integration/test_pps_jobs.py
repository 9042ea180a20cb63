"""Jobs end to end through the real cluster, over the bus: a pipeline's
first commit runs a job whose output commit holds the datums' outputs; the
next input commit processes only the new datum (the others are skipped and
their outputs reused); a failing datum fails its job with a reason naming
it, and so do datum outputs that cannot be merged; StopJob kills a
running job; ListJob/InspectJob/ListDatum/InspectDatum
and the master's log lines; a deleted input commit takes its job along;
egress to S3 (and a failed egress failing its job); worker processes
following standby, stop and parallelism, and the local worker pool itself
(restart of a dead worker, SIGTERM then SIGKILL, crash loops); two pps
replicas running each job once; restart-datum re-running a failed datum of
a running job."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import grpc
import nats
import psutil
import pytest
from google.protobuf.empty_pb2 import Empty

from libs.api.internal import pps_work_pb2 as work
from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from libs.api.pps import pps_pb2 as pps
from libs.bus import Bus
from libs.errors import FailedPrecondition, InvalidArgument, NotFound
from libs.objects import S3ObjectStore
from services.pps.app.workers import LocalWorkerPool, worker_count
from tests.servers.fixtures import s3_server  # noqa: F401
from tests.servers.s3server import S3Server
from tests.support.cluster import Cluster, running


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from running(tmp_path_factory.mktemp("pps-jobs") / "data")


@pytest.fixture
def files(cluster: Cluster) -> Iterator[pfs_pb2_grpc.APIStub]:
    channel = grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}")
    try:
        yield pfs_pb2_grpc.APIStub(channel)
    finally:
        channel.close()


@pytest.fixture
async def bus(cluster: Cluster) -> AsyncIterator[Bus]:
    nc = await nats.connect(cluster.state()["nats"]["url"])
    b = Bus(nc, service="test", timeout=30.0)
    await b.request("pps", "DeleteAll", Empty(), Empty)
    await b.request("pfs", "DeleteRepo", pfs.DeleteRepoRequest(all=True, force=True), Empty)
    await b.request("pfs", "CreateRepo", pfs.CreateRepoRequest(repo=pfs.Repo(name="images")), Empty)
    try:
        yield b
    finally:
        await nc.close()


def commit_of(repo: str, ref: str) -> pfs.Commit:
    return pfs.Commit(repo=pfs.Repo(name=repo), id=ref)


async def put(bus: Bus, files: pfs_pb2_grpc.APIStub, contents: dict[str, bytes]) -> str:
    """One finished commit on images@master with ``contents``; its id."""
    start = pfs.StartCommitRequest(parent=commit_of("images", ""), branch="master")
    commit = await bus.request("pfs", "StartCommit", start, pfs.Commit)
    for path, data in contents.items():
        req = pfs.PutFileRequest(file=pfs.File(commit=commit, path=path), value=data)
        await asyncio.to_thread(files.PutFile, iter([req]), timeout=20)
    await bus.request("pfs", "FinishCommit", pfs.FinishCommitRequest(commit=commit), Empty)
    return commit.id


async def create(bus: Bus, name: str, script: str, **extra: object) -> None:
    req = pps.CreatePipelineRequest(
        pipeline=pps.Pipeline(name=name),
        transform=pps.Transform(cmd=["sh"], stdin=[script]),
        input=pps.Input(atom=pps.AtomInput(repo="images", glob="/*")),
    )
    for key, value in extra.items():
        if isinstance(value, pps.ParallelismSpec):
            req.parallelism_spec.CopyFrom(value)
        elif key == "egress":
            req.egress.URL = str(value)
        else:
            setattr(req, key, value)
    await bus.request("pps", "CreatePipeline", req, Empty)


async def list_jobs(bus: Bus, pipeline: str, **filters: object) -> list[pps.JobInfo]:
    req = pps.ListJobRequest(pipeline=pps.Pipeline(name=pipeline), **filters)  # type: ignore[arg-type]
    infos = await bus.request("pps", "ListJob", req, pps.JobInfos, kind="qry")
    return list(infos.job_info)


async def wait_jobs(bus: Bus, pipeline: str, n: int, timeout: float = 60.0) -> list[pps.JobInfo]:
    """The pipeline's jobs once ``n`` of them exist and all are finished."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = await list_jobs(bus, pipeline)
        done = [j for j in jobs if j.HasField("finished")]
        if len(jobs) >= n and len(done) == len(jobs):
            return jobs
        assert time.monotonic() < deadline, [(j.job.id, j.state, j.reason) for j in jobs]
        await asyncio.sleep(0.2)


async def inspect(bus: Bus, job: str, block: bool = False) -> pps.JobInfo:
    req = pps.InspectJobRequest(job=pps.Job(id=job), block_state=block)
    return await bus.request("pps", "InspectJob", req, pps.JobInfo, kind="qry")


async def list_datums(
    bus: Bus, job: str, page_size: int = 0, page: int = 0
) -> pps.ListDatumResponse:
    req = pps.ListDatumRequest(job=pps.Job(id=job), page_size=page_size, page=page)
    return await bus.request("pps", "ListDatum", req, pps.ListDatumResponse, kind="qry")


def read(files: pfs_pb2_grpc.APIStub, repo: str, commit: str, path: str) -> bytes:
    f = pfs.File(commit=commit_of(repo, commit), path=path)
    return b"".join(m.value for m in files.GetFile(pfs.GetFileRequest(file=f), timeout=10))


def paths(files: pfs_pb2_grpc.APIStub, repo: str, commit: str) -> list[str]:
    f = pfs.File(commit=commit_of(repo, commit), path="/")
    infos = files.ListFile(pfs.ListFileRequest(file=f), timeout=10).file_info
    return sorted(i.file.path for i in infos)


async def test_jobs_process_new_datums_and_skip_the_rest(
    bus: Bus, files: pfs_pb2_grpc.APIStub
) -> None:
    await put(bus, files, {"/a": b"alpha\n", "/b": b"beta\n"})
    started = time.monotonic()
    await create(
        bus, "upper", "for f in /pfs/images/*; do tr a-z A-Z < $f > /pfs/out/$(basename $f); done"
    )
    [first] = await wait_jobs(bus, "upper", 1)
    first_s = time.monotonic() - started
    assert first.state == pps.JOB_SUCCESS, first.reason
    assert (first.data_total, first.data_processed, first.data_skipped) == (2, 2, 0)
    out = first.output_commit.id
    assert paths(files, "upper", out) == ["/a", "/b"]
    assert read(files, "upper", out, "/a") == b"ALPHA\n"
    assert first.transform.cmd == ["sh"] and first.pipeline_version == 1
    assert first.input.atom.commit  # the job's input commit is filled in

    # A second commit adds one file: one datum processed, two skipped.
    started = time.monotonic()
    c2 = await put(bus, files, {"/c": b"gamma\n"})
    jobs = await wait_jobs(bus, "upper", 2)
    second_s = time.monotonic() - started
    second = jobs[0]  # newest first
    assert second.state == pps.JOB_SUCCESS, second.reason
    assert (second.data_total, second.data_processed, second.data_skipped) == (3, 1, 2)
    assert second.parent_job.id == first.job.id
    assert paths(files, "upper", second.output_commit.id) == ["/a", "/b", "/c"]
    assert read(files, "upper", second.output_commit.id, "/c") == b"GAMMA\n"
    print(f"first job {first_s:.2f}s, second job {second_s:.2f}s")

    # Filters: by input commit and by output commit.
    by_input = await list_jobs(bus, "upper", input_commit=[commit_of("images", c2)])
    assert [j.job.id for j in by_input] == [second.job.id]
    by_branch = await list_jobs(bus, "upper", input_commit=[commit_of("images", "master^")])
    assert [j.job.id for j in by_branch] == [first.job.id]  # master^ is the first commit
    by_output = await list_jobs(bus, "upper", output_commit=first.output_commit)
    assert [j.job.id for j in by_output] == [first.job.id]
    req = pps.InspectJobRequest(output_commit=second.output_commit)
    assert (await bus.request("pps", "InspectJob", req, pps.JobInfo, kind="qry")).job == second.job

    # Datums: the job's three, two SKIPPED, in datum order; paged.
    listed = await list_datums(bus, second.job.id)
    states = [(d.data[0].file.path, d.state) for d in listed.datum_infos]
    assert states == [("/a", pps.SKIPPED), ("/b", pps.SKIPPED), ("/c", pps.SUCCESS)]
    page = await list_datums(bus, second.job.id, page_size=2, page=1)
    assert page.total_pages == 2 and [d.state for d in page.datum_infos] == [pps.SUCCESS]
    one = listed.datum_infos[2].datum
    got = await bus.request(
        "pps", "InspectDatum", pps.InspectDatumRequest(datum=one), pps.DatumInfo, kind="qry"
    )
    assert got.state == pps.SUCCESS and got.data[0].file.path == "/c"
    skipped = pps.InspectDatumRequest(datum=listed.datum_infos[0].datum)
    got = await bus.request("pps", "InspectDatum", skipped, pps.DatumInfo, kind="qry")
    assert got.state == pps.SKIPPED and got.data[0].file.path == "/a"
    assert got.datum.job.id == second.job.id

    # The master logged the job.
    logs = await bus.request(
        "pps",
        "GetLogsPage",
        work.GetLogsPageRequest(
            request=pps.GetLogsRequest(pipeline=pps.Pipeline(name="upper"), master=True)
        ),
        work.LogPage,
        kind="qry",
    )
    assert any("2 skipped" in m.message for m in logs.messages), logs

    # InspectPipeline counts the jobs.
    info = await bus.request(
        "pps",
        "InspectPipeline",
        pps.InspectPipelineRequest(pipeline=pps.Pipeline(name="upper")),
        pps.PipelineInfo,
        kind="qry",
    )
    assert info.state == pps.PIPELINE_RUNNING

    # Deleting the input commit deletes the output commit and its job.
    await bus.request(
        "pfs", "DeleteCommit", pfs.DeleteCommitRequest(commit=commit_of("images", c2)), Empty
    )
    deadline = time.monotonic() + 20
    while len(await list_jobs(bus, "upper")) != 1:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)


async def test_a_failing_datum_fails_the_job(bus: Bus, files: pfs_pb2_grpc.APIStub) -> None:
    await put(bus, files, {"/good": b"1\n", "/bad": b"2\n"})
    await create(
        bus, "picky", 'case "$images" in *bad) exit 3;; esac; cp $images /pfs/out/', datum_tries=1
    )
    [job] = await wait_jobs(bus, "picky", 1)
    assert job.state == pps.JOB_FAILURE
    assert "/bad" in job.reason and job.data_failed == 1
    commit = await bus.request(
        "pfs",
        "InspectCommit",
        pfs.InspectCommitRequest(commit=job.output_commit),
        pfs.CommitInfo,
        kind="qry",
    )
    assert commit.HasField("finished") and commit.size_bytes == 0
    with pytest.raises(FailedPrecondition, match="JOB_FAILURE"):
        await bus.request("pps", "StopJob", pps.StopJobRequest(job=job.job), Empty)
    # Datums whose outputs clash (a file here, a directory there): the merge
    # fails, and so does the job, saying why.
    clash = (
        'if [ "$(basename $images)" = good ]; then echo 1 > /pfs/out/x; '
        "else mkdir /pfs/out/x && echo 2 > /pfs/out/x/y; fi"
    )
    await create(bus, "clash", clash)
    [job] = await wait_jobs(bus, "clash", 1)
    assert job.state == pps.JOB_FAILURE and "/x" in job.reason, job.reason


async def test_stop_job_kills_it_and_bad_requests(bus: Bus, files: pfs_pb2_grpc.APIStub) -> None:
    await put(bus, files, {"/slow": b"x\n"})
    await create(bus, "sleepy", "sleep 60")
    deadline = time.monotonic() + 30
    while not (jobs := await list_jobs(bus, "sleepy")) or jobs[0].state != pps.JOB_RUNNING:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    job = jobs[0].job
    await bus.request("pps", "StopJob", pps.StopJobRequest(job=job), Empty)
    info = await inspect(bus, job.id, block=True)
    assert info.state == pps.JOB_KILLED and info.HasField("finished")
    await bus.request("pps", "DeleteJob", pps.DeleteJobRequest(job=job), Empty)
    with pytest.raises(NotFound, match=job.id):
        await inspect(bus, job.id)
    with pytest.raises(InvalidArgument):
        await bus.request("pps", "InspectJob", pps.InspectJobRequest(), pps.JobInfo, kind="qry")
    with pytest.raises(NotFound):
        await list_datums(bus, "0" * 32)
    with pytest.raises(InvalidArgument):
        await bus.request("pps", "ChunkDone", work.ChunkDoneRequest(), Empty)


@pytest.mark.s3
async def test_egress_copies_the_output_to_s3(
    s3_server: S3Server,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    env = {k: v for k, v in s3_server.env().items() if k != "PACH_S3_BUCKET"}
    env.pop("PACH_OBJECT_BACKEND", None)
    bucket = f"egress-{secrets.token_hex(4)}"
    dest = S3ObjectStore(
        bucket=bucket,
        endpoint_url=s3_server.endpoint,
        region=s3_server.region,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
    )
    await dest.ensure_bucket()
    gen = running(tmp_path_factory.mktemp("pps-egress") / "data", **env)
    cluster = next(gen)
    try:
        nc = await nats.connect(cluster.state()["nats"]["url"])
        bus = Bus(nc, service="test", timeout=30.0)
        channel = grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}")
        files = pfs_pb2_grpc.APIStub(channel)
        repo = pfs.CreateRepoRequest(repo=pfs.Repo(name="images"))
        await bus.request("pfs", "CreateRepo", repo, Empty)
        await put(bus, files, {"/a": b"alpha\n", "/d/b": b"beta\n"})
        await create(bus, "out", "cp -r /pfs/images/* /pfs/out/", egress=f"s3://{bucket}/run1")
        [job] = await wait_jobs(bus, "out", 1)
        assert job.state == pps.JOB_SUCCESS, job.reason
        assert f"s3://{bucket}/run1" == job.egress.URL
        assert await dest.get("run1/a") == b"alpha\n"
        assert await dest.get("run1/d/b") == b"beta\n"
        # An egress that cannot be done fails the job, naming the URL.
        await create(bus, "lost", "cp -r /pfs/images/* /pfs/out/", egress="s3://no-such-bucket-x/p")
        [lost] = await wait_jobs(bus, "lost", 1)
        assert lost.state == pps.JOB_FAILURE and "s3://no-such-bucket-x/p" in lost.reason
        channel.close()
        await nc.close()
    finally:
        await dest.close()
        with contextlib.suppress(StopIteration):
            next(gen)


def worker_pids(cluster: Cluster, pipeline: str) -> list[int]:
    """Live worker processes of ``pipeline`` in ``cluster``."""
    return [proc.pid for proc in cluster.workers(pipeline)]


async def pipeline_state(bus: Bus, name: str) -> int:
    req = pps.InspectPipelineRequest(pipeline=pps.Pipeline(name=name))
    info = await bus.request("pps", "InspectPipeline", req, pps.PipelineInfo, kind="qry")
    return int(info.state)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.2)


async def test_workers_follow_standby_stop_and_parallelism(
    cluster: Cluster, bus: Bus, files: pfs_pb2_grpc.APIStub
) -> None:
    await put(bus, files, {"/a": b"1\n"})
    await create(bus, "idle", "cp $images /pfs/out/", standby=True)
    [job] = await wait_jobs(bus, "idle", 1)
    assert job.state == pps.JOB_SUCCESS, job.reason

    async def standing_by() -> bool:
        state = await pipeline_state(bus, "idle")
        return state == pps.PIPELINE_STANDBY and not worker_pids(cluster, "idle")

    await eventually(standing_by)  # idle with standby: no worker process

    await create(
        bus, "busy", "cp $images /pfs/out/", parallelism_spec=pps.ParallelismSpec(constant=2)
    )
    await wait_jobs(bus, "busy", 1)

    async def two_workers() -> bool:
        return len(worker_pids(cluster, "busy")) == 2

    await eventually(two_workers)  # no standby: the workers stay
    stop = pps.StopPipelineRequest(pipeline=pps.Pipeline(name="busy"))
    await bus.request("pps", "StopPipeline", stop, Empty)

    async def no_workers() -> bool:
        return not worker_pids(cluster, "busy")

    await eventually(no_workers)
    await bus.request(
        "pps",
        "DeletePipeline",
        pps.DeletePipelineRequest(pipeline=pps.Pipeline(name="idle")),
        Empty,
    )
    assert await list_jobs(bus, "idle") == []


async def master_lines(bus: Bus, pipeline: str, job: str) -> list[str]:
    req = work.GetLogsPageRequest(
        request=pps.GetLogsRequest(
            pipeline=pps.Pipeline(name=pipeline), job=pps.Job(id=job), master=True
        )
    )
    page = await bus.request("pps", "GetLogsPage", req, work.LogPage, kind="qry")
    return [m.message for m in page.messages]


async def test_output_follows_removed_changed_and_new_datums(
    bus: Bus, files: pfs_pb2_grpc.APIStub
) -> None:
    await put(bus, files, {"/a": b"a\n", "/b": b"b\n", "/c": b"c\n"})
    await create(bus, "twice", "cat $images $images > /pfs/out/$(basename $images)")
    [first] = await wait_jobs(bus, "twice", 1)
    assert first.state == pps.JOB_SUCCESS, first.reason
    # Next commit: /a deleted, /b changed, /d new, /c unchanged.
    start = pfs.StartCommitRequest(parent=commit_of("images", ""), branch="master")
    commit = await bus.request("pfs", "StartCommit", start, pfs.Commit)
    for path in ("/a", "/b"):
        gone = pfs.DeleteFileRequest(file=pfs.File(commit=commit, path=path))
        await asyncio.to_thread(files.DeleteFile, gone, timeout=20)
    for path, data in (("/b", b"B\n"), ("/d", b"d\n")):
        req = pfs.PutFileRequest(file=pfs.File(commit=commit, path=path), value=data)
        await asyncio.to_thread(files.PutFile, iter([req]), timeout=20)
    await bus.request("pfs", "FinishCommit", pfs.FinishCommitRequest(commit=commit), Empty)
    second = (await wait_jobs(bus, "twice", 2))[0]
    assert second.state == pps.JOB_SUCCESS, second.reason
    assert (second.data_total, second.data_skipped, second.data_processed) == (3, 1, 2)
    out = second.output_commit.id
    assert paths(files, "twice", out) == ["/b", "/c", "/d"]
    assert [read(files, "twice", out, p) for p in ("/b", "/c", "/d")] == [
        b"B\nB\n",
        b"c\nc\n",
        b"d\nd\n",
    ]
    lines = await master_lines(bus, "twice", second.job.id)
    assert any("merged from the previous job's output" in m for m in lines), lines


async def test_two_pps_replicas_run_each_job_once(tmp_path_factory: pytest.TempPathFactory) -> None:
    gen = running(tmp_path_factory.mktemp("pps-replicas") / "data", PACH_REPLICAS="pps=2")
    cluster = next(gen)
    try:
        nc = await nats.connect(cluster.state()["nats"]["url"])
        bus = Bus(nc, service="test", timeout=30.0)
        channel = grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}")
        files = pfs_pb2_grpc.APIStub(channel)
        repo = pfs.CreateRepoRequest(repo=pfs.Repo(name="images"))
        await bus.request("pfs", "CreateRepo", repo, Empty)
        await put(bus, files, {f"/f{i}": f"{i}\n".encode() for i in range(6)})
        two = pps.ParallelismSpec(constant=2)
        await create(bus, "shared", "cp $images /pfs/out/", parallelism_spec=two)
        [job] = await wait_jobs(bus, "shared", 1)
        assert job.state == pps.JOB_SUCCESS, job.reason
        assert (job.data_processed, job.restart) == (6, 0)
        assert len(paths(files, "shared", job.output_commit.id)) == 6

        async def two_workers() -> bool:
            return len(worker_pids(cluster, "shared")) == 2

        await eventually(two_workers)  # one replica's pool, not one per replica
        await asyncio.sleep(1.5)
        assert len(worker_pids(cluster, "shared")) == 2
        await put(bus, files, {"/g": b"g\n"})
        jobs = await wait_jobs(bus, "shared", 2)
        assert [j.state for j in jobs] == [pps.JOB_SUCCESS] * 2
        assert jobs[0].data_skipped == 6
        channel.close()
        await nc.close()
    finally:
        with contextlib.suppress(StopIteration):
            next(gen)


# --- the local worker pool, with stand-in worker processes -------------------------------

STAND_IN = """
import os, signal, time
if os.environ["PACH_PPS_WORKER_ID"].endswith("-1"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL stops this one
with open(os.path.join(os.environ["OUT"], os.environ["PACH_PPS_WORKER_ID"]), "a") as f:
    f.write("started\\n")
time.sleep(120)
"""


async def test_local_pool_restarts_a_dead_worker_and_stops_them_all(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path)}
    pool = LocalWorkerPool("p", command=[sys.executable, "-c", STAND_IN], env=env, grace=0.5)
    try:
        await pool.scale(2)

        async def both_started() -> bool:
            return all((tmp_path / f"p-{n}").exists() for n in range(2))

        await eventually(both_started)
        first = pool.pids()
        assert pool.size == 2 and len(first) == 2 and pool.failure == ""
        os.kill(first[0], signal.SIGKILL)  # a worker dies: it is started again

        async def restarted() -> bool:
            return (tmp_path / "p-0").read_text().count("started") == 2

        await eventually(restarted)
        assert first[0] not in pool.pids()
        await pool.scale(1)  # p-1 ignores SIGTERM: killed after the grace period
        assert not psutil.pid_exists(first[1]) or psutil.Process(first[1]).status() == "zombie"
        assert pool.size == 1
    finally:
        await pool.stop()
    assert pool.size == 0 and pool.pids() == []


async def test_local_pool_reports_a_crash_loop() -> None:
    pool = LocalWorkerPool("c", command=[sys.executable, "-c", "raise SystemExit(3)"])
    try:
        await pool.scale(1)

        async def failing() -> bool:
            return "keep exiting" in pool.failure

        await eventually(failing)
        assert "exit code 3" in pool.failure
    finally:
        await pool.stop()
    assert pool.failure == ""
    assert worker_count(pps.ParallelismSpec()) == 1
    assert worker_count(pps.ParallelismSpec(constant=3)) == 3
    assert worker_count(pps.ParallelismSpec(coefficient=0.5), cpus=8) == 4
    assert worker_count(pps.ParallelismSpec(coefficient=0.01), cpus=8) == 1


async def test_restart_datum_runs_a_failed_datum_of_a_running_job_again(
    bus: Bus, files: pfs_pb2_grpc.APIStub
) -> None:
    # /bad fails until a moment the test waits for (user code sees nothing of
    # the host to leave it a marker in); /slow keeps the job running past it.
    # The margin is wide: on a loaded machine the first try of /bad may start
    # many seconds after the pipeline is created, and it must start before.
    fixed_at = int(time.time()) + 45
    await put(bus, files, {"/bad": b"b\n", "/slow": b"s\n"})
    script = (
        'case "$images" in '
        '*slow) while [ "$(date +%s)" -lt "$((FIXED_AT + 8))" ]; do sleep 1; done;; '
        '*bad) [ "$(date +%s)" -ge "$FIXED_AT" ] || exit 1;; '
        "esac; cp $images /pfs/out/"
    )
    req = pps.CreatePipelineRequest(
        pipeline=pps.Pipeline(name="retry"),
        transform=pps.Transform(cmd=["sh"], stdin=[script], env={"FIXED_AT": str(fixed_at)}),
        input=pps.Input(atom=pps.AtomInput(repo="images", glob="/*")),
        parallelism_spec=pps.ParallelismSpec(constant=2),
        datum_tries=1,
    )
    await bus.request("pps", "CreatePipeline", req, Empty)

    async def bad_failed() -> bool:
        jobs = await list_jobs(bus, "retry")
        return bool(jobs) and jobs[0].data_failed == 1

    await eventually(bad_failed, timeout=fixed_at - time.time())
    [job] = await list_jobs(bus, "retry")
    assert job.state == pps.JOB_RUNNING
    running_datums = (await list_datums(bus, job.job.id)).datum_infos
    states = {d.data[0].file.path: d.state for d in running_datums}
    assert states == {"/bad": pps.FAILED, "/slow": pps.STARTING}
    with pytest.raises(FailedPrecondition, match="no running or failed datum"):
        req_none = pps.RestartDatumRequest(job=job.job, data_filters=["/none"])
        await bus.request("pps", "RestartDatum", req_none, Empty)
    await asyncio.sleep(max(0.0, fixed_at + 1 - time.time()))
    restart = pps.RestartDatumRequest(job=job.job, data_filters=["/bad"])
    said = await bus.request("pps", "RestartDatum", restart, work.RestartDatumResult)
    assert len(said.failed) == 1 and not said.running
    [job] = await wait_jobs(bus, "retry", 1)
    assert job.state == pps.JOB_SUCCESS, job.reason
    assert (job.data_processed, job.data_failed) == (2, 0)
    assert paths(files, "retry", job.output_commit.id) == ["/bad", "/slow"]
