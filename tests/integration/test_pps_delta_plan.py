"""A job planned from its input's diff against the previous successful job
(not by listing every datum and reading the whole skip index), through the
real cluster over the bus: unchanged datums are skipped and counted as
1.7 counts them, changed, new and deleted ones processed or removed, a
datum whose content comes back (processed before under the salt) and the
datums a failed job processed are skipped, the output equals a fresh
pipeline's over the same commit (also when the outputs share a path and
must be merged in full, and for a deeper glob); a spec update or
``--reprocess`` plans in full; a cross input keeps working."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import grpc
import nats
import pytest
from google.protobuf.empty_pb2 import Empty

from libs.api.internal import pps_work_pb2 as work
from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from libs.api.pps import pps_pb2 as pps
from libs.bus import Bus
from tests.support.cluster import Cluster, running

DELTA = "planned from the input's diff"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from running(tmp_path_factory.mktemp("pps-delta") / "data")


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
    try:
        yield b
    finally:
        await nc.close()


def commit_of(repo: str, ref: str) -> pfs.Commit:
    return pfs.Commit(repo=pfs.Repo(name=repo), id=ref)


async def commit(
    bus: Bus,
    files: pfs_pb2_grpc.APIStub,
    repo: str,
    put: dict[str, bytes],
    delete: tuple[str, ...] = (),
) -> str:
    """One finished commit on ``repo``@master (``put`` overwrites); its id."""
    start = pfs.StartCommitRequest(parent=commit_of(repo, ""), branch="master")
    c = await bus.request("pfs", "StartCommit", start, pfs.Commit)
    for path in delete:
        gone = pfs.DeleteFileRequest(file=pfs.File(commit=c, path=path))
        await asyncio.to_thread(files.DeleteFile, gone, timeout=20)
    for path, data in put.items():
        req = pfs.PutFileRequest(
            file=pfs.File(commit=c, path=path),
            value=data,
            overwrite_index=pfs.OverwriteIndex(index=0),
        )
        await asyncio.to_thread(files.PutFile, iter([req]), timeout=20)
    await bus.request("pfs", "FinishCommit", pfs.FinishCommitRequest(commit=c), Empty)
    return c.id


def spec(name: str, script: str, input: pps.Input) -> pps.CreatePipelineRequest:
    return pps.CreatePipelineRequest(
        pipeline=pps.Pipeline(name=name),
        transform=pps.Transform(cmd=["sh"], stdin=[script]),
        input=input,
    )


def atom(repo: str, glob: str = "/*") -> pps.Input:
    return pps.Input(atom=pps.AtomInput(repo=repo, glob=glob))


async def jobs(bus: Bus, pipeline: str, n: int, timeout: float = 90.0) -> list[pps.JobInfo]:
    """The pipeline's jobs (newest first) once ``n`` exist and all are finished."""
    deadline = time.monotonic() + timeout
    req = pps.ListJobRequest(pipeline=pps.Pipeline(name=pipeline))
    while True:
        infos = await bus.request("pps", "ListJob", req, pps.JobInfos, kind="qry")
        found = list(infos.job_info)
        if len(found) >= n and all(j.HasField("finished") for j in found):
            return found
        assert time.monotonic() < deadline, [(j.job.id, j.state, j.reason) for j in found]
        await asyncio.sleep(0.2)


async def newest(bus: Bus, pipeline: str, n: int) -> pps.JobInfo:
    return (await jobs(bus, pipeline, n))[0]


def counts(job: pps.JobInfo) -> tuple[int, int, int, int]:
    return (job.data_total, job.data_processed, job.data_skipped, job.data_failed)


async def master_lines(bus: Bus, pipeline: str, job: str) -> list[str]:
    req = work.GetLogsPageRequest(
        request=pps.GetLogsRequest(
            pipeline=pps.Pipeline(name=pipeline), job=pps.Job(id=job), master=True
        )
    )
    page = await bus.request("pps", "GetLogsPage", req, work.LogPage, kind="qry")
    return [m.message for m in page.messages]


async def planned_from_diff(bus: Bus, pipeline: str, job: pps.JobInfo) -> bool:
    return any(DELTA in line for line in await master_lines(bus, pipeline, job.job.id))


def tree(files: pfs_pb2_grpc.APIStub, repo: str, ref: str) -> dict[str, bytes]:
    """Every file of a commit with its content."""
    out: dict[str, bytes] = {}
    todo = ["/"]
    while todo:
        f = pfs.File(commit=commit_of(repo, ref), path=todo.pop())
        for info in files.ListFile(pfs.ListFileRequest(file=f), timeout=20).file_info:
            if info.file_type == pfs.DIR:
                todo.append(info.file.path)
                continue
            get = pfs.GetFileRequest(file=info.file)
            out[info.file.path] = b"".join(m.value for m in files.GetFile(get, timeout=20))
    return out


async def fresh_output(
    bus: Bus, files: pfs_pb2_grpc.APIStub, req: pps.CreatePipelineRequest, name: str
) -> dict[str, bytes]:
    """The output of a new pipeline like ``req`` over the inputs' heads: a full run."""
    return (await fresh_run(bus, files, req, name))[0]


async def fresh_run(
    bus: Bus, files: pfs_pb2_grpc.APIStub, req: pps.CreatePipelineRequest, name: str
) -> tuple[dict[str, bytes], pps.JobInfo]:
    full = pps.CreatePipelineRequest()
    full.CopyFrom(req)
    full.pipeline.name = name
    await bus.request("pps", "CreatePipeline", full, Empty)
    [job] = await jobs(bus, name, 1)
    assert job.state == pps.JOB_SUCCESS, job.reason
    assert job.data_skipped == 0
    return tree(files, name, job.output_commit.id), job


async def test_changed_new_deleted_reverted_and_after_a_failed_job(
    bus: Bus, files: pfs_pb2_grpc.APIStub
) -> None:
    await bus.request("pfs", "CreateRepo", pfs.CreateRepoRequest(repo=pfs.Repo(name="in")), Empty)
    first = {f"/f{i}": b"%d\n" % i for i in range(8)}
    c1 = await commit(bus, files, "in", first)
    # A datum fails on a file holding "bad".
    script = "grep -q bad $in && exit 1; tr 0-9 a-j < $in > /pfs/out/$(basename $in)"
    req = spec("cp", script, atom("in"))
    await bus.request("pps", "CreatePipeline", req, Empty)
    job = await newest(bus, "cp", 1)
    assert job.state == pps.JOB_SUCCESS and counts(job) == (8, 8, 0, 0), job.reason
    assert not await planned_from_diff(bus, "cp", job)  # no previous job

    # /f1 changed, /f2 deleted, /g new: 2 processed, 6 unchanged skipped.
    await commit(bus, files, "in", {"/f1": b"11\n", "/g": b"7\n"}, delete=("/f2",))
    job = await newest(bus, "cp", 2)
    assert job.state == pps.JOB_SUCCESS, job.reason
    assert counts(job) == (8, 2, 6, 0)
    assert await planned_from_diff(bus, "cp", job)
    out = tree(files, "cp", job.output_commit.id)
    assert "/f2" not in out and out["/f1"] == b"bb\n" and out["/g"] == b"h\n"

    # /f1 back to what it was (copied from the first commit: the same node):
    # its datum was processed under the salt by the first job, so nothing
    # runs. (Put again, the same bytes may be packed differently: another
    # node, another datum, processed; the full plan does the same.)
    start = pfs.StartCommitRequest(parent=commit_of("in", ""), branch="master")
    c3 = await bus.request("pfs", "StartCommit", start, pfs.Commit)
    copy = pfs.CopyFileRequest(
        src=pfs.File(commit=commit_of("in", c1), path="/f1"),
        dst=pfs.File(commit=c3, path="/f1"),
        overwrite=True,
    )
    await asyncio.to_thread(files.CopyFile, copy, timeout=20)
    await bus.request("pfs", "FinishCommit", pfs.FinishCommitRequest(commit=c3), Empty)
    job = await newest(bus, "cp", 3)
    assert job.state == pps.JOB_SUCCESS, job.reason
    assert counts(job) == (8, 0, 8, 0)
    assert await planned_from_diff(bus, "cp", job)
    assert tree(files, "cp", job.output_commit.id)["/f1"] == b"b\n"

    # A failed job: /h is processed, /x fails.
    await commit(bus, files, "in", {"/h": b"8\n", "/x": b"bad\n"})
    job = await newest(bus, "cp", 4)
    assert job.state == pps.JOB_FAILURE and job.data_failed == 1, job
    # /x fixed: the next job's previous success is the third job; /h was
    # processed by the failed job and is skipped, /x runs.
    await commit(bus, files, "in", {"/x": b"9\n"})
    job = await newest(bus, "cp", 5)
    assert job.state == pps.JOB_SUCCESS, job.reason
    assert counts(job) == (10, 1, 9, 0)
    assert await planned_from_diff(bus, "cp", job)
    # ListDatum: the job's datums in datum order, one processed.
    listed = await bus.request(
        "pps",
        "ListDatum",
        pps.ListDatumRequest(job=job.job),
        pps.ListDatumResponse,
        kind="qry",
    )
    states = {d.data[0].file.path: d.state for d in listed.datum_infos}
    assert states.pop("/x") == pps.SUCCESS and len(states) == 9
    assert set(states.values()) == {pps.SKIPPED}
    got = tree(files, "cp", job.output_commit.id)
    assert got == await fresh_output(bus, files, req, "cp_full")


async def test_shared_output_path_merges_in_full_in_datum_order(
    bus: Bus, files: pfs_pb2_grpc.APIStub
) -> None:
    """Every datum appends to one file: the output cannot come from the
    previous output, so it is merged in full (in datum order) after a plan
    from the diff."""
    await bus.request("pfs", "CreateRepo", pfs.CreateRepoRequest(repo=pfs.Repo(name="in")), Empty)
    await commit(bus, files, "in", {f"/d{i}/f": b"%d\n" % i for i in range(6)})
    req = spec("all", "cat $in/f > /pfs/out/all; cp $in/f /pfs/out/$(basename $in)", atom("in"))
    await bus.request("pps", "CreatePipeline", req, Empty)
    job = await newest(bus, "all", 1)
    assert job.state == pps.JOB_SUCCESS, job.reason
    await commit(bus, files, "in", {"/d3/f": b"three\n", "/d9/f": b"nine\n"}, delete=("/d0",))
    job = await newest(bus, "all", 2)
    assert job.state == pps.JOB_SUCCESS, job.reason
    assert counts(job) == (6, 2, 4, 0)
    assert await planned_from_diff(bus, "all", job)
    got = tree(files, "all", job.output_commit.id)
    assert got["/all"] == b"1\n2\nthree\n4\n5\nnine\n"
    assert got == await fresh_output(bus, files, req, "all_full")


async def test_deeper_and_recursive_globs(bus: Bus, files: pfs_pb2_grpc.APIStub) -> None:
    await bus.request("pfs", "CreateRepo", pfs.CreateRepoRequest(repo=pfs.Repo(name="in")), Empty)
    await commit(
        bus,
        files,
        "in",
        {
            f"/{d}/{n}": b"%s%s\n" % (d.encode(), n.encode())
            for d in ("a", "b")
            for n in ("x", "y", "z")
        },
    )
    script = "cp -r $in /pfs/out/$(echo $in | tr / _)"
    for name, glob in (("deep", "/*/*"), ("rec", "/**")):
        await bus.request("pps", "CreatePipeline", spec(name, script, atom("in", glob)), Empty)
        assert (await newest(bus, name, 1)).state == pps.JOB_SUCCESS
    await commit(bus, files, "in", {"/a/y": b"changed\n", "/c/w": b"new\n"}, delete=("/b/z",))
    deep = await newest(bus, "deep", 2)
    assert deep.state == pps.JOB_SUCCESS, deep.reason
    assert counts(deep) == (6, 2, 4, 0)
    assert await planned_from_diff(bus, "deep", deep)
    assert tree(files, "deep", deep.output_commit.id) == await fresh_output(
        bus, files, spec("deep", script, atom("in", "/*/*")), "deep_full"
    )
    # /** matches directories too: /a and /c (and the files) changed.
    rec = await newest(bus, "rec", 2)
    assert rec.state == pps.JOB_SUCCESS, rec.reason
    assert await planned_from_diff(bus, "rec", rec)
    full, fresh = await fresh_run(bus, files, spec("rec", script, atom("in", "/**")), "rec_full")
    assert rec.data_total == fresh.data_total
    assert rec.data_processed + rec.data_skipped == rec.data_total
    assert tree(files, "rec", rec.output_commit.id) == full


async def test_update_and_cross_plan_in_full(bus: Bus, files: pfs_pb2_grpc.APIStub) -> None:
    for repo in ("left", "right"):
        await bus.request(
            "pfs", "CreateRepo", pfs.CreateRepoRequest(repo=pfs.Repo(name=repo)), Empty
        )
        await commit(bus, files, repo, {"/1": b"1\n", "/2": b"2\n"})
    # An update keeps the salt but may change the datums: planned in full.
    req = spec("up", "cp $left /pfs/out/", atom("left"))
    await bus.request("pps", "CreatePipeline", req, Empty)
    assert (await newest(bus, "up", 1)).state == pps.JOB_SUCCESS
    req.input.atom.glob = "/"
    req.transform.stdin[:] = ["cat $left/* > /pfs/out/all"]
    req.update = True
    await bus.request("pps", "CreatePipeline", req, Empty)
    job = await newest(bus, "up", 2)
    assert job.state == pps.JOB_SUCCESS, job.reason
    assert counts(job) == (1, 1, 0, 0)
    assert not await planned_from_diff(bus, "up", job)
    # Not the previous output (the input did not change, the datums did).
    assert tree(files, "up", job.output_commit.id) == {"/all": b"1\n2\n"}
    # A cross: one new file on the left is two new datums.
    cross = pps.Input(cross=[atom("left"), atom("right")])
    req = spec("x", "cat $left $right > /pfs/out/$(basename $left)$(basename $right)", cross)
    await bus.request("pps", "CreatePipeline", req, Empty)
    assert (await newest(bus, "x", 1)).state == pps.JOB_SUCCESS
    await commit(bus, files, "left", {"/3": b"3\n"})
    job = await newest(bus, "x", 2)
    assert job.state == pps.JOB_SUCCESS, job.reason
    assert counts(job) == (6, 2, 4, 0)
    assert not await planned_from_diff(bus, "x", job)
    assert tree(files, "x", job.output_commit.id) == await fresh_output(bus, files, req, "x_full")
