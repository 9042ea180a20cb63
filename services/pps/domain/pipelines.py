"""The pipeline aggregate (``ev.pps.pipeline.<name>``): its state, how events
change it, and what the pipeline commands decide. Pure: no I/O.

A pipeline holds its validated spec (the normalized
``pps.CreatePipelineRequest``), its version (1 on creation, +1 per update),
its salt (names its datums; kept by an update unless it reprocesses), whether
it is stopped, and its runtime state with the reason for it.

State rules (Pachyderm 1.7's):

- create and update put the pipeline in ``PIPELINE_STARTING`` with no reason;
  an update keeps ``stopped``;
- stop makes it ``PIPELINE_PAUSED``; start makes it ``PIPELINE_RUNNING``;
- while stopped, ``set_state`` changes nothing but a move to
  ``PIPELINE_FAILURE`` (the pipeline stays paused until started);
- ``PIPELINE_FAILURE`` sticks: ``set_state`` leaves a failed pipeline as it
  is; only an update or a start take it out of failure.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from google.protobuf.message import Message

from libs.api.events import pps_pb2 as ev
from libs.api.pps import pps_pb2 as pps
from libs.bounds import MAX_PIPELINE_NAME, check_name
from libs.errors import AlreadyExists, InvalidArgument, NotFound, shown
from libs.events.envelope import AggregateRef

_NAME = re.compile(r"^[A-Za-z0-9_-]+$")

STARTING = pps.PIPELINE_STARTING
RUNNING = pps.PIPELINE_RUNNING
FAILURE = pps.PIPELINE_FAILURE
PAUSED = pps.PIPELINE_PAUSED


@dataclass(frozen=True)
class Pipeline:
    exists: bool = False
    name: str = ""
    version: int = 0
    salt: str = ""
    spec: pps.CreatePipelineRequest | None = None
    stopped: bool = False
    state: int = STARTING  # a pps.PipelineState value
    reason: str = ""


def validate_pipeline_name(name: str) -> str:
    """A pipeline name is also its output repo's name: letters, digits, ``_``
    and ``-`` only."""
    if not name:
        raise InvalidArgument("a pipeline name is required")
    check_name("pipeline name", name, MAX_PIPELINE_NAME)
    if not _NAME.match(name):
        raise InvalidArgument(
            f"pipeline name {shown(name)} is invalid: only alphanumeric characters, "
            "underscores and dashes are allowed",
            pipeline=name,
        )
    return name


def ref(name: str) -> AggregateRef:
    return AggregateRef("pps", "pipeline", name)


def evolve(state: Pipeline, event: Message) -> Pipeline:
    if isinstance(event, ev.PipelineCreated):
        return Pipeline(
            exists=True,
            name=event.spec.pipeline.name,
            version=event.version,
            salt=event.salt,
            spec=event.spec,
        )
    if isinstance(event, ev.PipelineUpdated):
        return replace(
            state,
            version=event.version,
            salt=event.salt,
            spec=event.spec,
            state=STARTING,
            reason="",
        )
    if isinstance(event, ev.PipelineStopped):
        return replace(state, stopped=True, state=PAUSED, reason="")
    if isinstance(event, ev.PipelineStarted):
        return replace(state, stopped=False, state=RUNNING, reason="")
    if isinstance(event, ev.PipelineStateSet):
        return replace(state, state=event.state, reason=event.reason)
    if isinstance(event, ev.PipelineDeleted):
        return Pipeline()
    return state


Decide = Callable[[Pipeline], Sequence[Message]]


def require(state: Pipeline, name: str) -> None:
    if not state.exists:
        raise NotFound(f"pipeline {name} not found", pipeline=name)


def create_pipeline(
    spec: pps.CreatePipelineRequest, salt: str, update: bool = False, reprocess: bool = False
) -> Decide:
    """CreatePipeline, or update-pipeline with ``update``.

    ``spec`` is the validated, normalized spec (stored without the
    request-only ``update``, ``reprocess`` and ``salt``); ``salt`` is a fresh
    salt, used on creation and by an update that ``reprocess``es (a plain
    update keeps the pipeline's salt)."""
    name = validate_pipeline_name(spec.pipeline.name)
    if not salt:
        raise InvalidArgument("a pipeline needs a salt", pipeline=name)
    stored = pps.CreatePipelineRequest()
    stored.CopyFrom(spec)
    for request_only in ("update", "reprocess", "salt"):
        stored.ClearField(request_only)  # type: ignore[arg-type]

    def decide(state: Pipeline) -> Sequence[Message]:
        if not state.exists:
            if update:
                raise NotFound(f"pipeline {name} not found: cannot update it", pipeline=name)
            return [ev.PipelineCreated(spec=stored, version=1, salt=salt)]
        if not update:
            raise AlreadyExists(f"pipeline {name} already exists", pipeline=name)
        new_salt = salt if reprocess else state.salt
        return [ev.PipelineUpdated(spec=stored, version=state.version + 1, salt=new_salt)]

    return decide


def stop_pipeline(name: str) -> Decide:
    validate_pipeline_name(name)

    def decide(state: Pipeline) -> Sequence[Message]:
        require(state, name)
        return [] if state.stopped else [ev.PipelineStopped()]

    return decide


def start_pipeline(name: str) -> Decide:
    """Start a stopped pipeline (a failed one is started again too)."""
    validate_pipeline_name(name)

    def decide(state: Pipeline) -> Sequence[Message]:
        require(state, name)
        if not state.stopped and state.state != FAILURE:
            return []
        return [ev.PipelineStarted()]

    return decide


def set_state(state_value: int, reason: str = "") -> Decide:
    """Move the pipeline's runtime state (the master's decision). No event
    when nothing changes, when the pipeline is gone, when it has failed, or
    when it is stopped (unless the move is to failure)."""
    if state_value not in pps.PipelineState.values():
        raise InvalidArgument(f"unknown pipeline state {state_value}", state=state_value)

    def decide(state: Pipeline) -> Sequence[Message]:
        if not state.exists or state.state == FAILURE:
            return []
        if state.stopped and state_value != FAILURE:
            return []
        if state.state == state_value and state.reason == reason:
            return []
        return [ev.PipelineStateSet(state=state_value, reason=reason)]  # type: ignore[arg-type]

    return decide


def delete_pipeline(name: str) -> Decide:
    validate_pipeline_name(name)

    def decide(state: Pipeline) -> Sequence[Message]:
        require(state, name)
        return [ev.PipelineDeleted()]

    return decide
