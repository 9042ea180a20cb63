"""Pipelines through the real cluster, over the bus (``cmd.pps.*``,
``qry.pps.*``): create-pipeline's checks (a bad spec, a missing input repo,
a taken name: an error and nothing created), update keeping the salt and
--reprocess drawing a new one, stop/start, delete (refused while another
pipeline reads it), and cron ticks."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator

import grpc
import nats
import pytest
from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message

from libs.api.internal import pps_work_pb2 as work
from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from libs.api.pps import pps_pb2 as pps
from libs.bus import Bus
from libs.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from tests.support.cluster import Cluster, running


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from running(tmp_path_factory.mktemp("pps-pipelines") / "data")


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


# --- helpers ----------------------------------------------------------------


def spec(name: str = "edges", repo: str = "images", **changes: object) -> pps.CreatePipelineRequest:
    req = pps.CreatePipelineRequest(
        pipeline=pps.Pipeline(name=name),
        transform=pps.Transform(cmd=["sh"], stdin=[f"cp -r /pfs/{repo}/* /pfs/out/"]),
        input=pps.Input(atom=pps.AtomInput(repo=repo, glob="/*")),
    )
    for key, value in changes.items():
        if isinstance(value, Message):
            getattr(req, key).CopyFrom(value)
        else:
            setattr(req, key, value)
    return req


def cron_spec(name: str = "ticker", every: str = "@every 2s") -> pps.CreatePipelineRequest:
    return pps.CreatePipelineRequest(
        pipeline=pps.Pipeline(name=name),
        transform=pps.Transform(cmd=["sh"], stdin=["cp /pfs/tick/* /pfs/out/"]),
        input=pps.Input(cron=pps.CronInput(name="tick", spec=every)),
    )


async def create(bus: Bus, req: pps.CreatePipelineRequest) -> None:
    await bus.request("pps", "CreatePipeline", req, Empty)


async def inspect(bus: Bus, name: str) -> pps.PipelineInfo:
    req = pps.InspectPipelineRequest(pipeline=pps.Pipeline(name=name))
    return await bus.request("pps", "InspectPipeline", req, pps.PipelineInfo, kind="qry")


async def pipelines(bus: Bus) -> list[str]:
    infos = await bus.request(
        "pps", "ListPipeline", pps.ListPipelineRequest(), pps.PipelineInfos, kind="qry"
    )
    return [i.pipeline.name for i in infos.pipeline_info]


async def repos(bus: Bus) -> list[str]:
    resp = await bus.request(
        "pfs", "ListRepo", pfs.ListRepoRequest(), pfs.ListRepoResponse, kind="qry"
    )
    return sorted(i.repo.name for i in resp.repo_info)


async def branch(bus: Bus, repo: str, name: str) -> pfs.BranchInfo:
    req = pfs.InspectBranchRequest(branch=pfs.Branch(repo=pfs.Repo(name=repo), name=name))
    return await bus.request("pfs", "InspectBranch", req, pfs.BranchInfo, kind="qry")


async def commits(bus: Bus, repo: str) -> list[pfs.CommitInfo]:
    req = pfs.ListCommitRequest(repo=pfs.Repo(name=repo))
    resp = await bus.request("pfs", "ListCommit", req, pfs.CommitInfos, kind="qry")
    return list(resp.commit_info)


def get_file(files: pfs_pb2_grpc.APIStub, repo: str, commit: str, path: str) -> bytes:
    f = pfs.File(commit=pfs.Commit(repo=pfs.Repo(name=repo), id=commit), path=path)
    return b"".join(m.value for m in files.GetFile(pfs.GetFileRequest(file=f), timeout=10))


def list_paths(files: pfs_pb2_grpc.APIStub, repo: str, commit: str) -> list[str]:
    f = pfs.File(commit=pfs.Commit(repo=pfs.Repo(name=repo), id=commit), path="/")
    infos = files.ListFile(pfs.ListFileRequest(file=f), timeout=10).file_info
    return sorted(i.file.path for i in infos)


# --- create-pipeline's checks -------------------------------------------------


BAD_SPECS: list[tuple[str, pps.CreatePipelineRequest, str]] = [
    ("no name", spec(name=""), "pipeline.name"),
    ("bad name", spec(name="a.b"), "a.b"),
    ("no transform", pps.CreatePipelineRequest(pipeline=pps.Pipeline(name="edges")), "transform"),
    ("no cmd", spec(transform=pps.Transform(image="ubuntu")), "transform.cmd"),
    ("no input", spec(input=pps.Input()), "input"),
    (
        "no glob",
        spec(input=pps.Input(atom=pps.AtomInput(repo="images"))),
        "glob",
    ),
    (
        "own output",
        spec(input=pps.Input(atom=pps.AtomInput(repo="edges", glob="/*"))),
        "own output",
    ),
    (
        "input named out",
        spec(input=pps.Input(atom=pps.AtomInput(name="out", repo="images", glob="/*"))),
        "out",
    ),
    (
        "same input name twice",
        spec(
            input=pps.Input(
                cross=[
                    pps.Input(atom=pps.AtomInput(repo="images", glob="/*")),
                    pps.Input(atom=pps.AtomInput(repo="images", glob="/")),
                ]
            )
        ),
        "more than once",
    ),
    (
        "bad cron spec",
        spec(input=pps.Input(cron=pps.CronInput(name="tick", spec="every 2s"))),
        "cron",
    ),
    (
        "both parallelism settings",
        spec(parallelism_spec=pps.ParallelismSpec(constant=2, coefficient=1.0)),
        "parallelism_spec",
    ),
]


@pytest.mark.parametrize(("case", "req", "named"), BAD_SPECS, ids=[c for c, _, _ in BAD_SPECS])
async def test_a_bad_spec_creates_nothing(
    bus: Bus, case: str, req: pps.CreatePipelineRequest, named: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        await create(bus, req)
    assert named in str(info.value), case
    assert await pipelines(bus) == []
    assert await repos(bus) == ["images"]


async def test_a_missing_input_repo_creates_nothing(bus: Bus) -> None:
    cross = pps.Input(
        cross=[
            pps.Input(atom=pps.AtomInput(repo="images", glob="/*")),
            pps.Input(atom=pps.AtomInput(repo="nowhere", glob="/*")),
        ]
    )
    with pytest.raises(NotFound, match="input repo nowhere not found"):
        await create(bus, spec(input=cross))
    assert await pipelines(bus) == []
    assert await repos(bus) == ["images"]


async def test_a_branch_pfs_refuses_leaves_nothing_behind(bus: Bus) -> None:
    """The output and cron repos made before pfs refused the output branch's
    provenance are deleted again."""
    cross = pps.Input(
        cross=[
            pps.Input(
                atom=pps.AtomInput(
                    repo="images", glob="/*", branch="0123456789abcdef0123456789abcdef"
                )
            ),
            pps.Input(cron=pps.CronInput(name="tick", spec="@every 1h")),
        ]
    )
    with pytest.raises(InvalidArgument, match="0123456789abcdef0123456789abcdef"):
        await create(bus, spec(input=cross))
    assert await pipelines(bus) == []
    assert await repos(bus) == ["images"]


async def test_a_taken_name_is_refused(bus: Bus) -> None:
    await create(bus, spec())
    with pytest.raises(AlreadyExists, match="pipeline edges already exists"):
        await create(bus, spec(description="again"))
    assert (await inspect(bus, "edges")).description == ""
    # A repo that is not a pipeline's output is not taken over either.
    await bus.request(
        "pfs", "CreateRepo", pfs.CreateRepoRequest(repo=pfs.Repo(name="taken")), Empty
    )
    with pytest.raises(AlreadyExists, match="a repo named taken already exists"):
        await create(bus, spec(name="taken"))
    assert await pipelines(bus) == ["edges"]


async def test_update_of_a_missing_pipeline_creates_nothing(bus: Bus) -> None:
    with pytest.raises(NotFound, match="pipeline edges not found"):
        await create(bus, spec(update=True))
    assert await pipelines(bus) == []
    assert await repos(bus) == ["images"]


# --- create, inspect, update --------------------------------------------------


async def test_create_makes_the_output_repo_and_branch(bus: Bus) -> None:
    await create(bus, spec(description="find edges"))
    assert await repos(bus) == ["edges", "images"]
    out = await branch(bus, "edges", "master")
    assert [(p.repo.name, p.name) for p in out.provenance] == [("images", "master")]

    info = await inspect(bus, "edges")
    assert info.pipeline.name == "edges" and info.version == 1 and len(info.salt) == 32
    assert info.description == "find edges" and info.output_branch == "master"
    assert info.input.atom.name == "images" and info.input.atom.branch == "master"
    assert list(info.transform.cmd) == ["sh"] and info.datum_tries == 3
    assert info.parallelism_spec.constant == 1 and info.cache_size == "64M"
    # STARTING, until the pipeline's master has looked at it.
    assert info.state in (pps.PIPELINE_STARTING, pps.PIPELINE_RUNNING) and not info.stopped
    assert info.created_at.seconds > time.time() - 60
    assert await pipelines(bus) == ["edges"]

    got = await bus.request(
        "pps",
        "GetPipelineSpec",
        work.PipelineSpecRequest(pipeline=pps.Pipeline(name="edges")),
        work.PipelineSpec,
        kind="qry",
    )
    assert got.version == 1 and got.salt == info.salt
    assert got.spec.pipeline.name == "edges" and not got.spec.update


async def test_update_keeps_the_salt_and_reprocess_changes_it(bus: Bus) -> None:
    await create(bus, spec())
    first = await inspect(bus, "edges")
    await create(bus, spec(update=True, description="v2"))
    second = await inspect(bus, "edges")
    assert second.version == 2 and second.salt == first.salt and second.description == "v2"
    assert second.created_at == first.created_at
    await create(bus, spec(update=True, reprocess=True))
    third = await inspect(bus, "edges")
    assert third.version == 3 and third.salt != first.salt


async def test_list_is_newest_first(bus: Bus) -> None:
    await create(bus, spec())
    await create(bus, spec(name="montage", repo="edges"))
    assert await pipelines(bus) == ["montage", "edges"]


# --- stop / start ---------------------------------------------------------------


async def test_stop_and_start(bus: Bus) -> None:
    await create(bus, spec())
    req = pps.StopPipelineRequest(pipeline=pps.Pipeline(name="edges"))
    await bus.request("pps", "StopPipeline", req, Empty)
    info = await inspect(bus, "edges")
    assert info.stopped and info.state == pps.PIPELINE_PAUSED
    await bus.request("pps", "StopPipeline", req, Empty)  # again: no change
    start = pps.StartPipelineRequest(pipeline=pps.Pipeline(name="edges"))
    await bus.request("pps", "StartPipeline", start, Empty)
    info = await inspect(bus, "edges")
    assert not info.stopped and info.state == pps.PIPELINE_RUNNING
    gone = pps.StopPipelineRequest(pipeline=pps.Pipeline(name="gone"))
    with pytest.raises(NotFound, match="pipeline gone not found"):
        await bus.request("pps", "StopPipeline", gone, Empty)


# --- delete -------------------------------------------------------------------


async def test_delete_removes_the_pipeline_and_its_output_repo(bus: Bus) -> None:
    await create(bus, spec())
    await create(bus, spec(name="montage", repo="edges"))
    edges = pps.DeletePipelineRequest(pipeline=pps.Pipeline(name="edges"))
    with pytest.raises(FailedPrecondition, match="montage read its output"):
        await bus.request("pps", "DeletePipeline", edges, Empty)
    assert await pipelines(bus) == ["montage", "edges"]
    assert await repos(bus) == ["edges", "images", "montage"]

    montage = pps.DeletePipelineRequest(pipeline=pps.Pipeline(name="montage"))
    await bus.request("pps", "DeletePipeline", montage, Empty)
    assert await pipelines(bus) == ["edges"]
    assert await repos(bus) == ["edges", "images"]
    with pytest.raises(NotFound, match="pipeline montage not found"):
        await inspect(bus, "montage")
    with pytest.raises(NotFound, match="pipeline montage not found"):
        await bus.request("pps", "DeletePipeline", montage, Empty)
    # The name can be used again.
    await create(bus, spec(name="montage", repo="edges"))
    assert (await inspect(bus, "montage")).version == 1


async def test_forced_delete_and_delete_all(bus: Bus) -> None:
    await create(bus, spec())
    await create(bus, spec(name="montage", repo="edges"))
    edges = pps.DeletePipelineRequest(pipeline=pps.Pipeline(name="edges"), force=True)
    await bus.request("pps", "DeletePipeline", edges, Empty)
    assert await pipelines(bus) == ["montage"]
    await create(bus, spec(name="other"))
    with pytest.raises(InvalidArgument, match="one pipeline and all"):
        await bus.request(
            "pps",
            "DeletePipeline",
            pps.DeletePipelineRequest(pipeline=pps.Pipeline(name="other"), all=True),
            Empty,
        )
    await bus.request("pps", "DeletePipeline", pps.DeletePipelineRequest(all=True), Empty)
    assert await pipelines(bus) == []
    assert await repos(bus) == ["images"]


# --- cron ---------------------------------------------------------------------


TIME = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


async def wait_for_commits(bus: Bus, repo: str, n: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while len([c for c in await commits(bus, repo) if c.HasField("finished")]) < n:
        assert time.monotonic() < deadline, f"fewer than {n} commits in {repo}"
        await asyncio.sleep(0.2)


async def test_cron_ticks_every_2s_until_stopped_and_end_on_delete(
    bus: Bus, files: pfs_pb2_grpc.APIStub
) -> None:
    await create(bus, cron_spec())
    assert await repos(bus) == ["images", "ticker", "ticker_tick"]
    out = await branch(bus, "ticker", "master")
    assert [(p.repo.name, p.name) for p in out.provenance] == [("ticker_tick", "master")]
    info = await inspect(bus, "ticker")
    assert info.input.cron.repo == "ticker_tick" and info.input.cron.start.seconds > 0

    await wait_for_commits(bus, "ticker_tick", 2, timeout=10)
    ticks = [c for c in await commits(bus, "ticker_tick") if c.HasField("finished")]
    times = []
    for c in ticks[:2]:
        assert list_paths(files, "ticker_tick", c.commit.id) == ["/time"]
        data = get_file(files, "ticker_tick", c.commit.id, "/time")
        assert TIME.match(data), data
        times.append(data)
    assert times[0] != times[1]

    stop = pps.StopPipelineRequest(pipeline=pps.Pipeline(name="ticker"))
    await bus.request("pps", "StopPipeline", stop, Empty)
    stopped_at = len(await commits(bus, "ticker_tick"))
    await asyncio.sleep(4.5)
    assert len(await commits(bus, "ticker_tick")) == stopped_at

    start = pps.StartPipelineRequest(pipeline=pps.Pipeline(name="ticker"))
    await bus.request("pps", "StartPipeline", start, Empty)
    await wait_for_commits(bus, "ticker_tick", stopped_at + 1, timeout=10)

    delete = pps.DeletePipelineRequest(pipeline=pps.Pipeline(name="ticker"))
    await bus.request("pps", "DeletePipeline", delete, Empty)
    assert await repos(bus) == ["images"]
    await asyncio.sleep(3)
    assert await repos(bus) == ["images"]  # no tick brought the cron repo back


async def test_incremental_cron_adds_a_file_per_tick(bus: Bus, files: pfs_pb2_grpc.APIStub) -> None:
    req = cron_spec("inc", "@every 1s")
    req.incremental = True
    await create(bus, req)
    await wait_for_commits(bus, "inc_tick", 3, timeout=10)
    head = (await branch(bus, "inc_tick", "master")).head.id
    paths = list_paths(files, "inc_tick", head)
    assert len(paths) >= 3
    for path in paths:
        assert TIME.match(path[1:].encode()), path
        assert get_file(files, "inc_tick", head, path) == path[1:].encode()
