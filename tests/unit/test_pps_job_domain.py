"""The job aggregate's decisions and evolution (pure), the master's chunk
cutting, and the jobs read models (projection + readers over SQLite)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from functools import reduce
from pathlib import Path

import pytest
from google.protobuf.message import Message

from libs.api.events import pps_pb2 as ev
from libs.api.events.envelope_pb2 import Envelope
from libs.api.pps import pps_pb2 as pps
from libs.errors import FailedPrecondition, InvalidArgument, NotFound
from libs.events import RecordedEvent, View
from libs.readmodels import SqliteDocumentStore
from services.pps.adapters import jobs_view
from services.pps.adapters.jobs_view import JobsProjection
from services.pps.domain import jobs
from services.pps.domain.chunks import chunk_bounds, chunk_count, chunk_of
from services.pps.domain.jobs import Job

JOB = jobs.job_id("edges", "c" * 32)


def apply(state: Job, events: Sequence[Message]) -> Job:
    return reduce(jobs.evolve, events, state)


def decide(state: Job, d: jobs.Decide) -> tuple[Job, list[Message]]:
    events = list(d(state))
    return apply(state, events), events


def created() -> ev.JobCreated:
    return ev.JobCreated(
        pipeline="edges",
        pipeline_version=1,
        salt="s",
        output_repo="edges",
        output_branch="master",
        output_commit="c" * 32,
        inputs=[ev.JobInputCommit(name="images", repo="images", branch="master", commit="i1")],
    )


def result(i: int, state: int = pps.SUCCESS, path: str = "") -> ev.DatumResult:
    return ev.DatumResult(
        id=f"d{i}",
        index=i,
        state=state,  # type: ignore[arg-type]
        output_tree="t" * 64,
        inputs=[ev.DatumFile(path=path or f"/f{i}", hash=bytes([i]))],
    )


def started(chunks: int = 3, total: int = 10, skipped: int = 1) -> Job:
    state, _ = decide(Job(), jobs.create_job(created()))
    state, _ = decide(state, jobs.start_job(JOB, total, skipped, chunks, []))
    return state


def test_job_id_is_deterministic_32_hex() -> None:
    a = jobs.job_id("edges", "c" * 32)
    assert a == jobs.job_id("edges", "c" * 32)
    assert len(a) == 32 and int(a, 16) >= 0
    assert a != jobs.job_id("edges", "d" * 32)
    assert a != jobs.job_id("other", "c" * 32)


def test_create_is_a_noop_when_the_job_exists_or_was_deleted() -> None:
    state, events = decide(Job(), jobs.create_job(created()))
    assert len(events) == 1 and state.exists and state.id == JOB
    assert state.state == pps.JOB_STARTING and state.inputs[0].commit == "i1"
    assert decide(state, jobs.create_job(created()))[1] == []
    gone, _ = decide(state, jobs.delete_job(JOB))
    assert not gone.exists and gone.deleted
    assert decide(gone, jobs.create_job(created()))[1] == []


def test_start_records_counts_and_refuses_twice() -> None:
    state = started()
    assert state.state == pps.JOB_RUNNING and state.started
    assert (state.total, state.skipped, state.chunks, state.slots) == (10, 1, 3, 3)
    assert state.pending() == [0, 1, 2]
    with pytest.raises(FailedPrecondition, match="already been started"):
        jobs.start_job(JOB, 10, 1, 3, [])(state)
    with pytest.raises(InvalidArgument):
        jobs.start_job(JOB, 1, 2, 1, [])
    with pytest.raises(InvalidArgument, match="need chunks"):
        jobs.start_job(JOB, 5, 0, 0, [])
    with pytest.raises(NotFound):
        jobs.start_job(JOB, 1, 0, 1, [])(Job())


def test_a_chunk_counts_once() -> None:
    state = started()
    state, events = decide(state, jobs.record_chunk(JOB, 1, [result(0), result(1)], "w0"))
    assert len(events) == 1 and state.processed == 2 and state.pending() == [0, 2]
    # A redelivered report changes nothing: no datum is applied twice.
    again, events = decide(state, jobs.record_chunk(JOB, 1, [result(0), result(1)], "w1"))
    assert events == [] and again.processed == 2
    # evolve alone is idempotent too (a replayed event).
    dup = jobs.evolve(state, ev.DatumsProcessed(chunk=1, results=[result(5)]))
    assert dup.processed == 2
    with pytest.raises(InvalidArgument, match="not 7"):
        jobs.record_chunk(JOB, 7, [], "")(state)


def test_report_before_start_is_refused_and_after_finish_ignored() -> None:
    state, _ = decide(Job(), jobs.create_job(created()))
    with pytest.raises(FailedPrecondition, match="not been started"):
        jobs.record_chunk(JOB, 0, [result(0)])(state)
    state = started(chunks=1)
    state, _ = decide(state, jobs.finish_job(JOB, pps.JOB_KILLED, "stopped"))
    assert decide(state, jobs.record_chunk(JOB, 0, [result(0)]))[1] == []


def test_success_needs_every_chunk_and_no_failure() -> None:
    state = started(chunks=2)
    with pytest.raises(FailedPrecondition, match="2 chunks unreported"):
        jobs.finish_job(JOB, pps.JOB_SUCCESS)(state)
    state, _ = decide(state, jobs.record_chunk(JOB, 0, [result(0)]))
    state, _ = decide(state, jobs.record_chunk(JOB, 1, [result(1, pps.FAILED)]))
    assert state.failed == 1 and state.processed == 1 and state.pending() == []
    with pytest.raises(FailedPrecondition, match="1 datums failed"):
        jobs.finish_job(JOB, pps.JOB_SUCCESS)(state)
    done, _ = decide(state, jobs.finish_job(JOB, pps.JOB_FAILURE, "datum d1 failed"))
    assert done.finished and done.state == pps.JOB_FAILURE and done.reason == "datum d1 failed"
    with pytest.raises(FailedPrecondition, match="JOB_FAILURE"):
        jobs.finish_job(JOB, pps.JOB_FAILURE, "again")(done)
    with pytest.raises(InvalidArgument):
        jobs.finish_job(JOB, pps.JOB_RUNNING)


def test_finish_with_tree_and_stats() -> None:
    state = started(chunks=0, total=3, skipped=3)
    stats = pps.ProcessStats(download_bytes=5)
    state, events = decide(state, jobs.finish_job(JOB, pps.JOB_SUCCESS, "", "r" * 64, stats))
    assert state.state == pps.JOB_SUCCESS and state.output_tree == "r" * 64
    assert isinstance(events[0], ev.JobFinished) and events[0].stats.download_bytes == 5


def test_restart_datums_reissues_failed_chunks_under_new_slots() -> None:
    state = started(chunks=2)
    state, _ = decide(state, jobs.record_chunk(JOB, 0, [result(0, pps.FAILED, "/a")]))
    state, _ = decide(state, jobs.record_chunk(JOB, 1, [result(1, pps.FAILED, "/b")]))
    with pytest.raises(FailedPrecondition, match="no failed datum"):
        jobs.restart_datums(JOB, ["/nothing"])(state)
    state, events = decide(state, jobs.restart_datums(JOB, ["/b"]))
    assert isinstance(events[0], ev.DatumsRestarted)
    assert state.slots == 3 and state.pending() == [2] and state.source_chunk(2) == 1
    assert state.failed == 1
    # The taken-back slot's late report is ignored; the new slot counts.
    assert decide(state, jobs.record_chunk(JOB, 1, [result(1)]))[1] == []
    state, _ = decide(state, jobs.record_chunk(JOB, 2, [result(1)]))
    assert state.pending() == [] and state.processed == 1 and state.failed == 1
    # No filter: every failed datum.
    state, _ = decide(state, jobs.restart_datums(JOB, []))
    assert state.pending() == [3] and state.source_chunk(3) == 0 and state.failed == 0


def test_restart_and_delete() -> None:
    state = started()
    state, events = decide(state, jobs.restart_job(JOB))
    assert state.restarts == 1 and isinstance(events[0], ev.JobRestarted)
    done, _ = decide(state, jobs.finish_job(JOB, pps.JOB_KILLED))
    with pytest.raises(FailedPrecondition, match="JOB_KILLED"):
        jobs.restart_job(JOB)(done)
    gone, events = decide(done, jobs.delete_job(JOB))
    assert len(events) == 1 and not gone.exists
    assert decide(gone, jobs.delete_job(JOB))[1] == []


def test_data_filter_matching() -> None:
    d = jobs.FailedDatum("id1", ("/a/b",), ("0a",))
    assert jobs.datum_matches([], d)
    assert jobs.datum_matches(["/a/b"], d) and jobs.datum_matches(["a/b"], d)
    assert jobs.datum_matches(["0a"], d) and jobs.datum_matches(["id1"], d)
    assert not jobs.datum_matches(["/a/b", "/c"], d)


def test_chunk_cutting_is_deterministic_and_bounded() -> None:
    assert chunk_count(0, 4) == 0
    assert chunk_count(5, 4) == 5  # fewer datums than 10 per worker: one each
    assert chunk_count(1000, 1) == 10
    assert chunk_count(1000, 1, per_chunk=1) == 1000
    assert chunk_count(100_000, 1, per_chunk=1) == 2000  # capped
    assert chunk_count(1_000_000, 1) == 1000  # at most 1000 datums a chunk
    bounds = chunk_bounds(10, 4)
    assert bounds == [0, 2, 5, 7, 10]
    assert [chunk_of(bounds, i) for i in range(10)] == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    for todo, chunks in ((7, 7), (100, 3), (1, 1)):
        b = chunk_bounds(todo, chunks)
        sizes = [b[c + 1] - b[c] for c in range(chunks)]
        assert sum(sizes) == todo and min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


# --- the jobs read models ---------------------------------------------------------


class Views:
    """The jobs projection over a SQLite store, fed events by hand."""

    def __init__(self, store: SqliteDocumentStore) -> None:
        self.store = store
        self.projection = JobsProjection(store)
        self.seq = 0

    async def feed(self, aggregate: str, agg_id: str, *events: Message) -> None:
        async with self.store.batch() as batch:
            v = View(self.store, batch)
            for event in events:
                self.seq += 1
                env = Envelope(
                    event_id=f"e{self.seq}",
                    aggregate_service="pps",
                    aggregate_type=aggregate,
                    aggregate_id=agg_id,
                )
                env.time.FromNanoseconds(self.seq * 1000)
                await self.projection.apply(RecordedEvent(env, event, self.seq), v)


@pytest.fixture
async def views(tmp_path: Path) -> AsyncIterator[Views]:
    store = SqliteDocumentStore(tmp_path / "pps.sqlite")
    await store.open(JobsProjection.collections)
    try:
        yield Views(store)
    finally:
        await store.close()


async def test_views_count_chunks_once_and_keep_the_skip_index(views: Views) -> None:
    docs = views.store
    await views.feed("job", JOB, created())
    await views.feed("job", JOB, ev.JobStarted(total=3, skipped=0, chunks=2))
    done = ev.DatumsProcessed(chunk=0, results=[result(0), result(1, pps.FAILED, "/x")])
    await views.feed("job", JOB, done, done)  # a replayed event changes nothing
    doc = await jobs_view.get_job(docs, JOB)
    assert doc is not None and doc["state"] == pps.JOB_RUNNING
    assert (doc["data_processed"], doc["data_failed"], doc["data_total"]) == (1, 1, 3)
    assert [d["id"] async for d in jobs_view.job_datums(docs, JOB)] == ["d0", "d1"]
    index = [d["id"] async for d in jobs_view.processed(docs, "edges", "s")]
    assert index == ["d0"]  # only successful datums are reused
    assert [d async for d in jobs_view.processed(docs, "edges", "other salt")] == []
    # restart-datum takes the failed datum's chunk back.
    await views.feed("job", JOB, ev.DatumsRestarted(data_filters=["/x"]))
    doc = await jobs_view.get_job(docs, JOB)
    assert doc is not None and (doc["data_processed"], doc["data_failed"]) == (0, 0)
    d1 = await jobs_view.get_datum(docs, JOB, "d1")
    assert d1 is not None and d1["state"] == pps.STARTING
    await views.feed("job", JOB, ev.DatumsProcessed(chunk=2, results=[result(0), result(1)]))
    await views.feed("job", JOB, ev.DatumsProcessed(chunk=1, results=[result(2)]))
    await views.feed("job", JOB, ev.JobFinished(state=pps.JOB_SUCCESS, output_tree="r" * 64))
    doc = await jobs_view.get_job(docs, JOB)
    assert doc is not None and doc["done"] and doc["data_processed"] == 3
    assert await jobs_view.job_counts(docs, "edges") == {pps.JOB_SUCCESS: 1}
    assert (await jobs_view.last_success(docs, "edges", 10**9) or {}).get("id") == JOB
    found = await jobs_view.job_by_output(docs, "edges", "c" * 32)
    assert found is not None and found["id"] == JOB


async def test_views_list_and_drop(views: Views) -> None:
    docs = views.store
    other = ev.JobCreated()
    other.CopyFrom(created())
    other.output_commit = "e" * 32
    other.parent_job = JOB
    other_id = jobs.job_id("edges", "e" * 32)
    await views.feed("job", JOB, created())
    await views.feed("job", other_id, other)
    listed = [d["id"] async for d in jobs_view.list_jobs(docs, "edges")]
    assert listed == [other_id, JOB]  # newest first
    by_input = jobs_view.list_jobs(docs, input_commits=[("images", "i1")])
    assert len([d async for d in by_input]) == 2
    assert [d async for d in jobs_view.list_jobs(docs, input_commits=[("images", "zz")])] == []
    assert [d["id"] async for d in jobs_view.unfinished_jobs(docs, "edges")] == [JOB, other_id]
    await views.feed("job", other_id, ev.JobStarted(total=1, chunks=1))
    await views.feed("job", other_id, ev.DatumsProcessed(chunk=0, results=[result(0)]))
    await views.feed("job", other_id, ev.JobDeleted())
    assert await jobs_view.get_job(docs, other_id) is None
    assert [d async for d in jobs_view.job_datums(docs, other_id)] == []
    assert len([d async for d in jobs_view.processed(docs, "edges", "s")]) == 1
    # The pipeline's deletion drops its jobs, datums and skip index.
    await views.feed("pipeline", "edges", ev.PipelineDeleted())
    assert [d async for d in jobs_view.list_jobs(docs)] == []
    assert [d async for d in jobs_view.processed(docs, "edges", "s")] == []
