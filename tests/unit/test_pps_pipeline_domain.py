"""The pipeline aggregate's decisions, and the pipelines read model's
documents, without any I/O beyond an in-memory SQLite store."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from libs.api.events import pps_pb2 as ev
from libs.api.events.envelope_pb2 import Envelope
from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pps import pps_pb2 as pps
from libs.errors import AlreadyExists, InvalidArgument, NotFound
from libs.events import AggregateRef, RecordedEvent, View
from libs.objects import LocalObjectStore
from libs.readmodels import SqliteDocumentStore
from libs.trees import DataRef
from services.pps.adapters.pfs import Pfs
from services.pps.adapters.pipelines_view import (
    PipelinesProjection,
    get_pipeline,
    list_pipelines,
)
from services.pps.app.cron import CronInputTicks, rfc3339, tick_path
from services.pps.app.pipelines import pipeline_info
from services.pps.domain import pipelines as p
from services.pps.domain.events import registry


def spec(name: str = "edges", **changes: object) -> pps.CreatePipelineRequest:
    req = pps.CreatePipelineRequest(
        pipeline=pps.Pipeline(name=name),
        transform=pps.Transform(cmd=["sh"], stdin=["cp -r /pfs/images/* /pfs/out/"]),
        input=pps.Input(atom=pps.AtomInput(name="images", repo="images", glob="/*")),
        output_branch="master",
    )
    for key, value in changes.items():
        setattr(req, key, value)
    return req


def state_after(*events: Message) -> p.Pipeline:
    s = p.Pipeline()
    for e in events:
        s = p.evolve(s, e)
    return s


def run(state: p.Pipeline, decide: p.Decide) -> tuple[p.Pipeline, Sequence[Message]]:
    events = decide(state)
    for e in events:
        state = p.evolve(state, e)
    return state, events


def test_every_pps_event_type_is_registered() -> None:
    types = set(registry().types())
    assert {
        "pps.PipelineCreated",
        "pps.PipelineUpdated",
        "pps.PipelineStopped",
        "pps.PipelineStarted",
        "pps.PipelineStateSet",
        "pps.PipelineDeleted",
        "pps.JobCreated",
        "pps.JobStarted",
        "pps.DatumsProcessed",
        "pps.JobFinished",
        "pps.JobRestarted",
        "pps.DatumsRestarted",
        "pps.JobDeleted",
    } <= types


def test_aggregate_subject() -> None:
    assert p.ref("edges").subject == "ev.pps.pipeline.edges"


def test_create_starts_at_version_1_with_the_salt() -> None:
    s, events = run(p.Pipeline(), p.create_pipeline(spec(), "salt1"))
    assert len(events) == 1 and isinstance(events[0], ev.PipelineCreated)
    assert s.exists and s.name == "edges" and s.version == 1 and s.salt == "salt1"
    assert s.state == pps.PIPELINE_STARTING and not s.stopped
    assert s.spec is not None and s.spec.transform.cmd == ["sh"]


def test_the_stored_spec_drops_the_request_only_fields() -> None:
    req = spec(update=True, reprocess=True, salt="given")
    s, _ = run(p.Pipeline(), p.create_pipeline(req, "s"))
    assert s.spec is not None
    assert not s.spec.update and not s.spec.reprocess and not s.spec.salt
    assert req.update  # the caller's request is left as it was


def test_create_of_an_existing_pipeline_is_refused() -> None:
    s, _ = run(p.Pipeline(), p.create_pipeline(spec(), "s"))
    with pytest.raises(AlreadyExists, match="pipeline edges already exists"):
        p.create_pipeline(spec(), "other")(s)


def test_update_keeps_the_salt_and_reprocess_changes_it() -> None:
    s, _ = run(p.Pipeline(), p.create_pipeline(spec(), "salt1"))
    changed = spec(description="v2")
    s, events = run(s, p.create_pipeline(changed, "salt2", update=True))
    assert isinstance(events[0], ev.PipelineUpdated)
    assert s.version == 2 and s.salt == "salt1"
    assert s.spec is not None and s.spec.description == "v2"
    s, _ = run(s, p.create_pipeline(changed, "salt3", update=True, reprocess=True))
    assert s.version == 3 and s.salt == "salt3"


def test_update_of_a_missing_pipeline_is_not_found() -> None:
    with pytest.raises(NotFound, match="pipeline edges not found"):
        p.create_pipeline(spec(), "s", update=True)(p.Pipeline())


def test_update_resets_the_state_and_keeps_stopped() -> None:
    s = state_after(
        ev.PipelineCreated(spec=spec(), version=1, salt="s"),
        ev.PipelineStateSet(state=pps.PIPELINE_FAILURE, reason="boom"),
    )
    s, _ = run(s, p.create_pipeline(spec(), "x", update=True))
    assert s.state == pps.PIPELINE_STARTING and s.reason == ""
    s, _ = run(s, p.stop_pipeline("edges"))
    s, _ = run(s, p.create_pipeline(spec(), "x", update=True))
    assert s.stopped and s.version == 3


def test_stop_and_start() -> None:
    s, _ = run(p.Pipeline(), p.create_pipeline(spec(), "s"))
    s, events = run(s, p.stop_pipeline("edges"))
    assert events == [ev.PipelineStopped()]
    assert s.stopped and s.state == pps.PIPELINE_PAUSED
    assert p.stop_pipeline("edges")(s) == []  # already stopped
    s, events = run(s, p.start_pipeline("edges"))
    assert events == [ev.PipelineStarted()]
    assert not s.stopped and s.state == pps.PIPELINE_RUNNING
    assert p.start_pipeline("edges")(s) == []  # already running


def test_start_takes_a_failed_pipeline_out_of_failure() -> None:
    s = state_after(
        ev.PipelineCreated(spec=spec(), version=1, salt="s"),
        ev.PipelineStateSet(state=pps.PIPELINE_FAILURE, reason="image missing"),
    )
    s, events = run(s, p.start_pipeline("edges"))
    assert events == [ev.PipelineStarted()] and s.state == pps.PIPELINE_RUNNING


def test_set_state_rules() -> None:
    s, _ = run(p.Pipeline(), p.create_pipeline(spec(), "s"))
    s, events = run(s, p.set_state(pps.PIPELINE_RUNNING))
    assert events == [ev.PipelineStateSet(state=pps.PIPELINE_RUNNING)]
    assert p.set_state(pps.PIPELINE_RUNNING)(s) == []  # unchanged
    s, _ = run(s, p.set_state(pps.PIPELINE_STANDBY))
    assert s.state == pps.PIPELINE_STANDBY
    # A stopped pipeline stays paused, except that it can fail.
    stopped, _ = run(s, p.stop_pipeline("edges"))
    assert p.set_state(pps.PIPELINE_RUNNING)(stopped) == []
    failed, _ = run(stopped, p.set_state(pps.PIPELINE_FAILURE, "bad"))
    assert failed.state == pps.PIPELINE_FAILURE and failed.reason == "bad"
    # Failure sticks.
    assert p.set_state(pps.PIPELINE_RUNNING)(failed) == []
    # A pipeline that is gone changes nothing.
    assert p.set_state(pps.PIPELINE_RUNNING)(p.Pipeline()) == []
    with pytest.raises(InvalidArgument, match="unknown pipeline state 99"):
        p.set_state(99)


def test_delete() -> None:
    s, _ = run(p.Pipeline(), p.create_pipeline(spec(), "s"))
    s, events = run(s, p.delete_pipeline("edges"))
    assert events == [ev.PipelineDeleted()] and not s.exists
    with pytest.raises(NotFound, match="pipeline edges not found"):
        p.delete_pipeline("edges")(s)
    # The name can be used again, from version 1.
    s, _ = run(s, p.create_pipeline(spec(), "new"))
    assert s.version == 1 and s.salt == "new"


def test_commands_on_a_missing_pipeline_are_not_found() -> None:
    for decide in (p.stop_pipeline("gone"), p.start_pipeline("gone"), p.delete_pipeline("gone")):
        with pytest.raises(NotFound, match="pipeline gone not found"):
            decide(p.Pipeline())


def test_bad_names_are_refused() -> None:
    for bad in ("a b", "a.b", "a/b", "a>b", "é"):
        with pytest.raises(InvalidArgument) as info:
            p.stop_pipeline(bad)
        assert repr(bad) in str(info.value)
    with pytest.raises(InvalidArgument, match="a pipeline name is required"):
        p.delete_pipeline("")
    with pytest.raises(InvalidArgument, match="needs a salt"):
        p.create_pipeline(spec(), "")


# --- the read model ---------------------------------------------------------


def recorded(name: str, version: int, event: Message, seconds: int) -> RecordedEvent:
    ref = AggregateRef("pps", "pipeline", name)
    env = Envelope(
        aggregate_service=ref.service,
        aggregate_type=ref.type,
        aggregate_id=ref.id,
        aggregate_version=version,
        type=registry().schema_for(event).event_type,
    )
    env.time.CopyFrom(Timestamp(seconds=seconds))
    return RecordedEvent(envelope=env, event=event, stream_seq=version)


async def apply_all(store: SqliteDocumentStore, *events: RecordedEvent) -> None:
    projection = PipelinesProjection()
    for event in events:
        async with store.batch() as batch:
            await projection.apply(event, View(store, batch))


@pytest.fixture
async def store(tmp_path: Path) -> SqliteDocumentStore:
    s = SqliteDocumentStore(tmp_path / "pps.sqlite")
    await s.open(PipelinesProjection.collections)
    return s


async def test_read_model_follows_the_pipeline(store: SqliteDocumentStore) -> None:
    await apply_all(
        store,
        recorded("edges", 1, ev.PipelineCreated(spec=spec(), version=1, salt="s1"), 100),
        recorded("montage", 1, ev.PipelineCreated(spec=spec("montage"), version=1, salt="m"), 200),
        recorded("edges", 2, ev.PipelineStopped(), 300),
    )
    edges = await get_pipeline(store, "edges")
    assert edges is not None
    assert edges.version == 1 and edges.salt == "s1" and edges.stopped
    assert edges.state == pps.PIPELINE_PAUSED and edges.created_ns == 100 * 10**9
    assert edges.spec == spec()
    assert [r.name async for r in list_pipelines(store)] == ["montage", "edges"]

    updated = spec(description="new")
    await apply_all(
        store,
        recorded("edges", 3, ev.PipelineUpdated(spec=updated, version=2, salt="s1"), 400),
        recorded("edges", 3, ev.PipelineStarted(), 400),  # a repeat: already applied
        recorded("edges", 4, ev.PipelineStateSet(state=pps.PIPELINE_FAILURE, reason="x"), 500),
    )
    edges = await get_pipeline(store, "edges")
    assert edges is not None and edges.version == 2 and edges.spec.description == "new"
    assert edges.stopped and edges.state == pps.PIPELINE_FAILURE and edges.reason == "x"

    await apply_all(store, recorded("edges", 5, ev.PipelineDeleted(), 600))
    assert await get_pipeline(store, "edges") is None
    assert [r.name async for r in list_pipelines(store)] == ["montage"]
    await store.close()


async def test_pipeline_info_is_filled_from_the_spec(store: SqliteDocumentStore) -> None:
    full = spec(
        description="d",
        incremental=True,
        enable_stats=True,
        cache_size="64M",
        max_queue_size=1,
        datum_tries=3,
        standby=True,
        pod_spec="{}",
    )
    full.parallelism_spec.constant = 2
    full.egress.URL = "s3://bucket/dir"
    full.chunk_spec.number = 4
    full.resource_requests.memory = "64M"
    full.datum_timeout.seconds = 5
    full.hashtree_spec.constant = 1
    await apply_all(
        store, recorded("edges", 1, ev.PipelineCreated(spec=full, version=1, salt="s"), 100)
    )
    record = await get_pipeline(store, "edges")
    assert record is not None
    info = pipeline_info(record, {pps.JOB_SUCCESS: 2, pps.JOB_FAILURE: 1})
    assert info.pipeline.name == "edges" and info.version == 1 and info.salt == "s"
    assert info.transform == full.transform and info.input == full.input
    assert info.output_branch == "master" and info.egress.URL == "s3://bucket/dir"
    assert info.parallelism_spec.constant == 2 and info.chunk_spec.number == 4
    assert info.resource_requests.memory == "64M" and info.datum_timeout.seconds == 5
    assert info.description == "d" and info.incremental and info.enable_stats
    assert info.cache_size == "64M" and info.max_queue_size == 1 and info.datum_tries == 3
    assert info.standby and info.pod_spec == "{}" and info.hashtree_spec.constant == 1
    assert info.created_at.seconds == 100 and info.state == pps.PIPELINE_STARTING
    assert dict(info.job_counts) == {pps.JOB_SUCCESS: 2, pps.JOB_FAILURE: 1}
    assert not info.HasField("service") and not info.HasField("scheduling_spec")
    await store.close()


def test_cron_tick_names() -> None:
    t = datetime(2018, 3, 4, 5, 6, 7, tzinfo=UTC)
    assert rfc3339(t) == "2018-03-04T05:06:07Z"
    assert tick_path(t, incremental=False) == "/time"
    assert tick_path(t, incremental=True) == "/2018-03-04T05:06:07Z"


# --- cron ticks against a pfs stand-in ----------------------------------------


class TickPfs(Pfs):
    """Just enough of pfs for one cron repo: commits with their start time
    and the paths written to them."""

    def __init__(self) -> None:
        super().__init__(bus=None)  # type: ignore[arg-type]
        self.commits: list[tuple[str, datetime, list[str], bool]] = []

    def finished(self) -> int:
        return sum(1 for c in self.commits if c[3])

    async def inspect_branch(self, repo: str, name: str) -> pfs.BranchInfo | None:
        if not self.commits:
            return None
        return pfs.BranchInfo(name=name, head=pfs.Commit(id=self.commits[-1][0]))

    async def inspect_commit(self, repo: str, commit_id: str) -> pfs.CommitInfo:
        for cid, started, _, finished in self.commits:
            if cid == commit_id:
                info = pfs.CommitInfo(commit=pfs.Commit(id=cid))
                info.started.FromDatetime(started)
                if finished:
                    info.finished.FromDatetime(started)
                return info
        raise NotFound(commit_id)

    async def start_commit(self, repo: str, branch: str) -> str:
        cid = f"c{len(self.commits)}"
        self.commits.append((cid, datetime.now(UTC), [], False))
        return cid

    async def put_refs(
        self,
        repo: str,
        commit_or_branch: str,
        path: str,
        refs: Sequence[DataRef],
        *,
        append: bool = False,
    ) -> None:
        self.commits[-1][2].append(path)

    async def finish_commit(
        self, repo: str, commit_id: str, *, tree: str = "", empty: bool = False
    ) -> None:
        cid, started, paths, _ = self.commits[-1]
        self.commits[-1] = (cid, started, paths, True)

    async def delete_commit(self, repo: str, commit_id: str) -> None:
        self.commits = [c for c in self.commits if c[0] != commit_id]


async def until(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_missed_ticks_collapse_into_one_then_ticks_follow_the_schedule(
    tmp_path: Path,
) -> None:
    fake = TickPfs()
    began = datetime.now(UTC)
    start = began.replace(microsecond=0) - timedelta(seconds=30)
    cron = pps.CronInput(name="tick", repo="p_tick", spec="@every 1s")
    cron.start.FromDatetime(start)
    ticks = CronInputTicks("p", cron, False, fake, LocalObjectStore(tmp_path))
    task = asyncio.create_task(ticks.run())
    try:
        await until(lambda: fake.finished() >= 3)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert len(fake.commits) >= 3
    assert all(paths == ["/time"] and done for _, _, paths, done in fake.commits[:3])
    # One catch-up tick at once, then one on each whole second after it (not
    # the 30 missed ticks one after the other).
    started = [c[1] for c in fake.commits]
    assert (started[0] - began).total_seconds() < 5
    for before, after in itertools.pairwise(started[:3]):
        assert after >= before.replace(microsecond=0) + timedelta(seconds=1)


async def test_ticks_go_on_after_the_cron_repos_last_commit(tmp_path: Path) -> None:
    fake = TickPfs()
    recent = datetime.now(UTC)
    fake.commits.append(("old", recent, ["/time"], True))
    cron = pps.CronInput(name="tick", repo="p_tick", spec="@every 1s")
    cron.start.FromDatetime(recent - timedelta(hours=1))
    ticks = CronInputTicks("p", cron, True, fake, LocalObjectStore(tmp_path))
    task = asyncio.create_task(ticks.run())
    try:
        await until(lambda: fake.finished() >= 2)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    _, _, paths, done = fake.commits[1]
    assert done
    # Incremental: the file is named by the tick's time (the second after the last commit).
    tick = recent.replace(microsecond=0) + timedelta(seconds=1)
    assert paths == [f"/{rfc3339(tick)}"]
