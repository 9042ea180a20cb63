"""The job read models, projected from the job events (``ev.pps.job.<id>``)
and the pipelines' deletion:

- ``jobs``: one document per job (the JobInfo fields pps keeps, counts and
  summed stats), indexed by pipeline, output commit, state, creation order;
- ``datums``: ``<job>/<datum index, 12 digits>`` -> the datum's last result
  in that job (keys in datum order, so a job's datums stream in order from
  the primary key; ``id`` is indexed for lookups), its input files as
  ``inputs`` rows ``[name, repo, commit, path, hash hex]``;
- ``processed``: ``<pipeline>/<salt>/<datum id>`` -> the job that processed
  it successfully and its output tree: the skip index, read in datum-id
  order per pipeline and salt.

A pipeline's deletion drops its jobs, datums and skip index.

The projection and its collections carry the version of their document
shape (``DOC_VERSION``): when it changes they get new names, so a cluster
with the old ones rebuilds these from the log, through the upcasters
(v2: datums name their inputs' repo and commit, ``pps.DatumsProcessed`` v2)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from google.protobuf.message import Message

from libs.api.events import pps_pb2 as ev
from libs.api.pps import pps_pb2 as pps
from libs.events import Projection, RecordedEvent, View
from libs.readmodels import Collection, Document, DocumentStore
from services.pps.domain.jobs import ChunkReport, FailedDatum, restart_targets

DOC_VERSION = 2
JOBS = f"jobs_v{DOC_VERSION}"
DATUMS = f"datums_v{DOC_VERSION}"
PROCESSED = f"processed_v{DOC_VERSION}"

EVENT_TYPES = frozenset(
    {
        "pps.JobCreated",
        "pps.JobStarted",
        "pps.DatumsProcessed",
        "pps.DatumsRestarted",
        "pps.JobRestarted",
        "pps.JobFinished",
        "pps.JobDeleted",
        "pps.PipelineDeleted",
    }
)
_STATS = ("download_ns", "process_ns", "upload_ns", "download_bytes", "upload_bytes")


def datum_key(job: str, index: int) -> str:
    return f"{job}/{index:012d}"


def processed_key(pipeline: str, salt: str, datum: str) -> str:
    return f"{pipeline}/{salt}/{datum}"


def output_key(repo: str, commit: str) -> str:
    return f"{repo}/{commit}"


def stats_doc(stats: pps.ProcessStats) -> dict[str, int]:
    return {
        "download_ns": stats.download_time.ToNanoseconds(),
        "process_ns": stats.process_time.ToNanoseconds(),
        "upload_ns": stats.upload_time.ToNanoseconds(),
        "download_bytes": stats.download_bytes,
        "upload_bytes": stats.upload_bytes,
    }


def stats_pb(doc: dict[str, Any] | None) -> pps.ProcessStats:
    out = pps.ProcessStats()
    if not doc:
        return out
    out.download_time.FromNanoseconds(int(doc.get("download_ns", 0)))
    out.process_time.FromNanoseconds(int(doc.get("process_ns", 0)))
    out.upload_time.FromNanoseconds(int(doc.get("upload_ns", 0)))
    out.download_bytes = int(doc.get("download_bytes", 0))
    out.upload_bytes = int(doc.get("upload_bytes", 0))
    return out


def _inputs(inputs: Sequence[ev.JobInputCommit]) -> list[list[str]]:
    return [[i.name, i.repo, i.branch, i.commit, i.tree] for i in inputs]


def datum_files(result: ev.DatumResult) -> list[list[str]]:
    """A result's input files as the ``inputs`` rows of its datum document."""
    return [[f.name, f.repo, f.commit, f.path, bytes(f.hash).hex()] for f in result.inputs]


def datum_paths(doc: Document) -> list[str]:
    """The paths of a datum document's input files."""
    return [str(row[3]) for row in doc["inputs"]]


def _failed(doc: Document) -> dict[int, ChunkReport]:
    return {
        int(slot): ChunkReport(0, tuple(FailedDatum(d[0], tuple(d[1]), tuple(d[2])) for d in ds))
        for slot, ds in doc["failed"].items()
    }


class _GroupKeys:
    """Keys written in the current group (one ``View`` per group), so that a
    deletion also finds documents the store cannot show yet."""

    def __init__(self) -> None:
        self._view: View | None = None
        self._written: dict[tuple[str, str], set[str]] = {}

    def wrote(self, view: View, collection: str, scope: str, key: str) -> None:
        if view is not self._view:
            self._view, self._written = view, {}
        self._written.setdefault((collection, scope), set()).add(key)

    def written(self, view: View, collection: str, scope: str) -> set[str]:
        if view is not self._view:
            return set()
        return set(self._written.get((collection, scope), set()))


class JobsProjection(Projection):
    name = f"pps-jobs-v{DOC_VERSION}"
    subjects = ("ev.pps.>",)
    collections = (
        Collection(JOBS, indexes=("pipeline", "output_key", "state", "created", "done")),
        Collection(DATUMS, indexes=("job", "id", "pipeline", "state")),
        Collection(PROCESSED, indexes=("pipeline", "job")),
    )

    def __init__(self, store: DocumentStore) -> None:
        self.store = store
        self._keys = _GroupKeys()

    @property
    def event_types(self) -> frozenset[str] | None:
        return EVENT_TYPES

    async def apply(self, event: RecordedEvent, view: View) -> None:
        msg = event.event
        if isinstance(msg, ev.PipelineDeleted):
            await self._drop_pipeline(event.aggregate.id, view)
            return
        job = event.aggregate.id
        if isinstance(msg, ev.JobCreated):
            if await view.get(JOBS, job) is None:
                self._keys.wrote(view, JOBS, msg.pipeline, job)
                view.put(JOBS, job, _created(job, msg, event))
            return
        doc = await view.get(JOBS, job)
        if doc is None:
            return
        if isinstance(msg, ev.JobDeleted):
            await self._drop_job(doc, view)
            return
        new = await self._change(doc, msg, event, view)
        if new is not None:
            view.put(JOBS, job, new)

    async def _change(
        self, doc: Document, msg: Message, event: RecordedEvent, view: View
    ) -> Document | None:
        now = event.envelope.time.ToNanoseconds()
        if isinstance(msg, ev.JobStarted):
            new = {**doc, "state": pps.JOB_RUNNING, "started_ns": now}
            new.update(data_total=msg.total, data_skipped=msg.skipped, chunks=msg.chunks)
            if msg.inputs:
                new["inputs"] = _inputs(msg.inputs)
            return new
        if isinstance(msg, ev.DatumsProcessed):
            return self._processed(doc, msg, view)
        if isinstance(msg, ev.DatumsRestarted):
            targets = restart_targets(_failed(doc), msg.data_filters)
            failed = dict(doc["failed"])
            reported = dict(doc["reported"])
            for slot in targets:
                for d in failed.pop(str(slot), []):
                    key = datum_key(doc["id"], int(d[3]))
                    datum = await view.get(DATUMS, key)
                    if datum is not None:
                        view.put(DATUMS, key, {**datum, "state": pps.STARTING, "reason": ""})
                reported.pop(str(slot), None)
            return _counted({**doc, "failed": failed, "reported": reported})
        if isinstance(msg, ev.JobRestarted):
            return {**doc, "restart": int(doc["restart"]) + 1}
        if isinstance(msg, ev.JobFinished):
            return {
                **doc,
                "state": msg.state,
                "reason": msg.reason,
                "output_tree": msg.output_tree,
                "finished_ns": now,
                "done": True,
            }
        return None

    def _processed(self, doc: Document, msg: ev.DatumsProcessed, view: View) -> Document | None:
        slot = str(msg.chunk)
        if slot in doc["reported"]:
            return None
        job, pipeline, salt = doc["id"], doc["pipeline"], doc["salt"]
        stats = dict(doc["stats"])
        failed: list[list[Any]] = []
        ok = 0
        for r in msg.results:
            inputs = datum_files(r)
            key = datum_key(job, r.index)
            view.put(
                DATUMS,
                key,
                {
                    "key": key,
                    "job": job,
                    "pipeline": pipeline,
                    "id": r.id,
                    "index": r.index,
                    "chunk": msg.chunk,
                    "state": r.state,
                    "reason": r.reason,
                    "tries": r.tries,
                    "output_tree": r.output_tree,
                    "stats_tree": r.stats_tree,
                    "stats": stats_doc(r.stats),
                    "inputs": inputs,
                    "worker": msg.worker_id,
                },
            )
            self._keys.wrote(view, DATUMS, pipeline, key)
            for name, value in stats_doc(r.stats).items():
                stats[name] = int(stats.get(name, 0)) + value
            if r.state == pps.FAILED:
                failed.append([r.id, [d[3] for d in inputs], [d[4] for d in inputs], r.index])
                continue
            ok += 1
            pkey = processed_key(pipeline, salt, r.id)
            view.put(
                PROCESSED,
                pkey,
                {
                    "key": pkey,
                    "pipeline": pipeline,
                    "salt": salt,
                    "id": r.id,
                    "job": job,
                    "output_tree": r.output_tree,
                },
            )
            self._keys.wrote(view, PROCESSED, pipeline, pkey)
        reported = {**doc["reported"], slot: [ok, len(failed)]}
        all_failed = {**doc["failed"]}
        if failed:
            all_failed[slot] = failed
        return _counted({**doc, "reported": reported, "failed": all_failed, "stats": stats})

    async def _drop_job(self, doc: Document, view: View) -> None:
        job = doc["id"]
        mine = self.store.query(DATUMS, start=f"{job}/", end=f"{job}0")
        keys = {d["key"] async for d in mine}
        keys |= {k for k in self._keys.written(view, DATUMS, doc["pipeline"]) if k.startswith(job)}
        for key in keys:
            view.delete(DATUMS, key)
        view.delete(JOBS, job)

    async def _drop_pipeline(self, pipeline: str, view: View) -> None:
        for collection in (JOBS, DATUMS, PROCESSED):
            query = self.store.query(collection, where={"pipeline": pipeline})
            keys = {d["key"] async for d in query}
            for key in keys | self._keys.written(view, collection, pipeline):
                view.delete(collection, key)


def _created(job: str, msg: ev.JobCreated, event: RecordedEvent) -> Document:
    return {
        "key": job,
        "id": job,
        "pipeline": msg.pipeline,
        "pipeline_version": msg.pipeline_version,
        "salt": msg.salt,
        "output_repo": msg.output_repo,
        "output_branch": msg.output_branch,
        "output_commit": msg.output_commit,
        "output_key": output_key(msg.output_repo, msg.output_commit),
        "stats_commit": msg.stats_commit,
        "inputs": _inputs(msg.inputs),
        "parent_job": msg.parent_job,
        "state": pps.JOB_STARTING,
        "reason": "",
        "created": event.stream_seq,
        "created_ns": event.envelope.time.ToNanoseconds(),
        "started_ns": 0,
        "finished_ns": 0,
        "done": False,
        "data_total": 0,
        "data_skipped": 0,
        "data_processed": 0,
        "data_failed": 0,
        "chunks": 0,
        "restart": 0,
        "reported": {},
        "failed": {},
        "stats": dict.fromkeys(_STATS, 0),
        "output_tree": "",
    }


def _counted(doc: Document) -> Document:
    reported = doc["reported"].values()
    return {
        **doc,
        "data_processed": sum(int(r[0]) for r in reported),
        "data_failed": sum(int(r[1]) for r in reported),
    }


# --- readers ------------------------------------------------------------------


async def get_job(docs: DocumentStore, job: str) -> Document | None:
    return await docs.get(JOBS, job)


async def job_by_output(docs: DocumentStore, repo: str, commit: str) -> Document | None:
    async for doc in docs.query(JOBS, where={"output_key": output_key(repo, commit)}, limit=1):
        return doc
    return None


async def list_jobs(
    docs: DocumentStore,
    pipeline: str = "",
    input_commits: Sequence[tuple[str, str]] = (),
    output_commit: tuple[str, str] | None = None,
) -> AsyncIterator[Document]:
    """Jobs newest first: all, or ``pipeline``'s; only those that read every
    one of ``input_commits`` ((repo, commit id)) and, with ``output_commit``,
    the job of that commit."""
    where: dict[str, Any] = {}
    if pipeline:
        where["pipeline"] = pipeline
    if output_commit is not None:
        where["output_key"] = output_key(*output_commit)
    wanted = set(input_commits)
    async for doc in docs.query(JOBS, where=where, order_by="created", descending=True):
        if wanted and not wanted <= {(i[1], i[3]) for i in doc["inputs"]}:
            continue
        yield doc


async def unfinished_jobs(docs: DocumentStore, pipeline: str) -> AsyncIterator[Document]:
    """``pipeline``'s unfinished jobs, oldest first."""
    query = docs.query(JOBS, where={"pipeline": pipeline, "done": False}, order_by="created")
    async for doc in query:
        yield doc


async def last_success(docs: DocumentStore, pipeline: str, before: int) -> Document | None:
    """``pipeline``'s newest successful job created before stream sequence
    ``before``."""
    where = {"pipeline": pipeline, "state": pps.JOB_SUCCESS}
    query = docs.query(JOBS, where=where, order_by="created", descending=True, end=before)
    async for doc in query:
        return doc
    return None


async def job_counts(docs: DocumentStore, pipeline: str) -> dict[int, int]:
    """JobState number -> how many of ``pipeline``'s jobs are in it (states
    with none are left out)."""
    out: dict[int, int] = {}
    for state in pps.JobState.values():
        n = await docs.count(JOBS, where={"pipeline": pipeline, "state": int(state)})
        if n:
            out[int(state)] = n
    return out


async def get_datum(docs: DocumentStore, job: str, datum: str) -> Document | None:
    """``job``'s result of datum ``datum`` (by id)."""
    async for doc in docs.query(DATUMS, where={"id": datum}):
        if doc["job"] == job:
            return doc
    return None


def job_datums(docs: DocumentStore, job: str, state: int | None = None) -> AsyncIterator[Document]:
    """The datums ``job`` processed (as last reported), in datum order."""
    where = {"state": state} if state is not None else None
    return docs.query(DATUMS, where=where, start=f"{job}/", end=f"{job}0")


def processed(docs: DocumentStore, pipeline: str, salt: str) -> AsyncIterator[Document]:
    """The skip index of ``pipeline`` under ``salt``, in datum-id order."""
    prefix = f"{pipeline}/{salt}/"
    return docs.query(PROCESSED, start=prefix, end=prefix[:-1] + "0")
