"""The ``pipelines`` read model: one document per live pipeline, projected
from the pipeline events, and its readers.

A document holds the pipeline's name, version, salt, spec (the serialized
``pps.CreatePipelineRequest``, base64), stopped flag, state, reason, the time
it was created and the pipeline aggregate's version it reflects."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from libs.api.events import pps_pb2 as ev
from libs.api.pps import pps_pb2 as pps
from libs.events import Projection, RecordedEvent, View
from libs.readmodels import Collection, DocumentStore

PIPELINES = "pipelines"

EVENT_TYPES = frozenset(
    {
        "pps.PipelineCreated",
        "pps.PipelineUpdated",
        "pps.PipelineStopped",
        "pps.PipelineStarted",
        "pps.PipelineStateSet",
        "pps.PipelineDeleted",
    }
)


@dataclass(frozen=True)
class PipelineRecord:
    name: str
    version: int
    salt: str
    spec: pps.CreatePipelineRequest  # normalized, as validated
    stopped: bool
    state: int  # a pps.PipelineState value
    reason: str
    created_ns: int
    updated_ns: int


def encode_spec(spec: pps.CreatePipelineRequest) -> str:
    return base64.b64encode(spec.SerializeToString(deterministic=True)).decode("ascii")


def decode_spec(text: str) -> pps.CreatePipelineRequest:
    spec = pps.CreatePipelineRequest()
    spec.ParseFromString(base64.b64decode(text))
    return spec


def record(doc: dict[str, Any]) -> PipelineRecord:
    return PipelineRecord(
        name=doc["name"],
        version=int(doc["version"]),
        salt=doc["salt"],
        spec=decode_spec(doc["spec"]),
        stopped=bool(doc["stopped"]),
        state=int(doc["state"]),
        reason=doc["reason"],
        created_ns=int(doc["created_ns"]),
        updated_ns=int(doc["updated_ns"]),
    )


async def get_pipeline(docs: DocumentStore, name: str) -> PipelineRecord | None:
    doc = await docs.get(PIPELINES, name)
    return None if doc is None else record(doc)


async def list_pipelines(docs: DocumentStore) -> AsyncIterator[PipelineRecord]:
    """Every live pipeline, newest first (as Pachyderm 1.7 lists them)."""
    async for doc in docs.query(PIPELINES, order_by="created_ns", descending=True):
        yield record(doc)


class PipelinesProjection(Projection):
    name = "pps-pipelines"
    subjects = ("ev.pps.pipeline.>",)
    collections = (Collection(PIPELINES, indexes=("created_ns",)),)

    @property
    def event_types(self) -> frozenset[str] | None:
        return EVENT_TYPES

    async def apply(self, event: RecordedEvent, view: View) -> None:
        name = event.aggregate.id
        msg = event.event
        at = event.envelope.time.ToNanoseconds()
        version = event.aggregate_version
        if isinstance(msg, ev.PipelineCreated):
            view.put(
                PIPELINES,
                name,
                {
                    "name": name,
                    "version": int(msg.version),
                    "salt": msg.salt,
                    "spec": encode_spec(msg.spec),
                    "stopped": False,
                    "state": pps.PIPELINE_STARTING,
                    "reason": "",
                    "created_ns": at,
                    "updated_ns": at,
                    "aggregate_version": version,
                },
            )
            return
        if isinstance(msg, ev.PipelineDeleted):
            view.delete(PIPELINES, name)
            return
        doc = await view.get(PIPELINES, name)
        if doc is None or int(doc["aggregate_version"]) >= version:
            return  # gone, or this event is already reflected
        changes: dict[str, Any]
        if isinstance(msg, ev.PipelineUpdated):
            changes = {
                "version": int(msg.version),
                "salt": msg.salt,
                "spec": encode_spec(msg.spec),
                "state": pps.PIPELINE_STARTING,
                "reason": "",
            }
        elif isinstance(msg, ev.PipelineStopped):
            changes = {"stopped": True, "state": pps.PIPELINE_PAUSED, "reason": ""}
        elif isinstance(msg, ev.PipelineStarted):
            changes = {"stopped": False, "state": pps.PIPELINE_RUNNING, "reason": ""}
        elif isinstance(msg, ev.PipelineStateSet):
            changes = {"state": int(msg.state), "reason": msg.reason}
        else:
            return
        view.put(
            PIPELINES,
            name,
            {**doc, **changes, "updated_ns": at, "aggregate_version": version},
        )
