"""What a pipeline's user code may use: its resource limits, the user it runs
as, and the cluster's caps on workers.

Pure rules over the spec (Pachyderm 1.7's ``resource_limits`` /
``resource_requests`` and ``transform.user``); the runner enforces them and
the pps service checks them at create-pipeline / update-pipeline.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from libs.api.pps import pps_pb2
from libs.errors import InvalidArgument

# Kubernetes quantities, as 1.7's specs wrote them: "10M", "1.5Gi", "512Ki", "100".
_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kKMGTPE]i?)?\s*$")
_SCALE = {
    "": 1,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 1 << 10,
    "Mi": 1 << 20,
    "Gi": 1 << 30,
    "Ti": 1 << 40,
    "Pi": 1 << 50,
    "Ei": 1 << 60,
}
MIN_MEMORY = 1 << 20  # below this nothing, not even a shell, starts
_USER = re.compile(r"^(?:\d+(?::\d+)?|[a-z_][a-z0-9_.-]{0,31}\$?(?::[a-z_][a-z0-9_.-]{0,31})?)$")

DEFAULT_MAX_WORKERS_PER_PIPELINE = 16
DEFAULT_MAX_WORKERS = 64


def parse_memory(text: str, field: str = "resource_limits.memory") -> int:
    """Bytes of a memory quantity ("10M", "1Gi", "1048576"); InvalidArgument
    naming ``field`` when it is not one."""
    m = _QUANTITY.match(text)
    if m is None:
        raise InvalidArgument(
            f"{field} {text!r} is not a memory size: expected a number with an optional "
            "unit such as 512Ki, 64M, 1.5Gi",
            field=field,
        )
    value = float(m.group(1)) * _SCALE[m.group(2) or ""]
    if not math.isfinite(value) or value > 1 << 62:
        raise InvalidArgument(f"{field} {text!r} is too large", field=field)
    return int(value)


@dataclass(frozen=True, slots=True)
class Limits:
    """What one datum's user code may use; 0: no limit of that kind.
    ``cpu``: cores (0.5: half of one); ``cpu_share``: the relative weight
    of ``resource_requests.cpu``."""

    memory: int = 0
    cpu: float = 0.0
    pids: int = 0
    cpu_share: float = 0.0

    def describe_memory(self) -> str:
        return _bytes(self.memory)


def limits_of(spec: pps_pb2.CreatePipelineRequest) -> Limits:
    """The limits ``spec`` sets (``resource_limits``; ``resource_requests``
    cpu as a weight). The spec was checked by ``check_resources``."""
    lim, req = spec.resource_limits, spec.resource_requests
    memory = parse_memory(lim.memory) if lim.memory else 0
    return Limits(memory=memory, cpu=float(lim.cpu), cpu_share=float(req.cpu))


def check_resources(spec: pps_pb2.CreatePipelineRequest) -> None:
    """InvalidArgument naming the field when ``resource_limits`` /
    ``resource_requests`` or ``transform.user`` cannot be enforced."""
    for name in ("resource_limits", "resource_requests"):
        res: pps_pb2.ResourceSpec = getattr(spec, name)
        if math.isnan(res.cpu) or res.cpu < 0:
            raise InvalidArgument(
                f"{name}.cpu is {res.cpu}: it must be zero or more cores", field=f"{name}.cpu"
            )
        if res.gpu < 0:
            raise InvalidArgument(f"{name}.gpu is {res.gpu}: it must be zero or more")
        if res.memory:
            parse_memory(res.memory, f"{name}.memory")
        if res.disk:
            parse_memory(res.disk, f"{name}.disk")
    lim = spec.resource_limits
    if lim.memory and parse_memory(lim.memory) < MIN_MEMORY:
        raise InvalidArgument(
            f"resource_limits.memory {lim.memory!r} is below the minimum of 1Mi",
            field="resource_limits.memory",
        )
    if 0 < lim.cpu < 0.01:
        raise InvalidArgument(
            f"resource_limits.cpu is {lim.cpu}: the smallest limit is 0.01 cores",
            field="resource_limits.cpu",
        )
    user = spec.transform.user
    if user and not _USER.match(user):
        raise InvalidArgument(
            f"transform.user {user!r} is not a user: expected a uid, uid:gid or a user name",
            field="transform.user",
        )


@dataclass(frozen=True)
class WorkerCaps:
    """How many workers one pipeline (``PACH_MAX_WORKERS_PER_PIPELINE``,
    default 16) and the whole cluster (``PACH_MAX_WORKERS``, default 64)
    may have."""

    per_pipeline: int = DEFAULT_MAX_WORKERS_PER_PIPELINE
    cluster: int = DEFAULT_MAX_WORKERS

    @classmethod
    def from_env(cls, e: Mapping[str, str]) -> WorkerCaps:
        per = _whole(e, "PACH_MAX_WORKERS_PER_PIPELINE", DEFAULT_MAX_WORKERS_PER_PIPELINE)
        total = _whole(e, "PACH_MAX_WORKERS", DEFAULT_MAX_WORKERS)
        return cls(per_pipeline=per, cluster=total)

    def check(self, name: str, workers: int, others: int) -> None:
        """InvalidArgument when pipeline ``name`` asking for ``workers``
        workers, with ``others`` workers of the other pipelines, exceeds a cap."""
        if workers > self.per_pipeline:
            raise InvalidArgument(
                f"pipeline {name}: parallelism_spec asks for {workers} workers, more than the "
                f"cap of {self.per_pipeline} workers per pipeline (PACH_MAX_WORKERS_PER_PIPELINE)",
                pipeline=name,
                field="parallelism_spec",
            )
        if workers + others > self.cluster:
            raise InvalidArgument(
                f"pipeline {name}: parallelism_spec asks for {workers} workers, but the other "
                f"pipelines have {others} and the cluster's cap is {self.cluster} workers "
                "(PACH_MAX_WORKERS)",
                pipeline=name,
                field="parallelism_spec",
            )


def _whole(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key, "")
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise InvalidArgument(f"{key} must be a whole number >= 1, got {raw!r}")
    return int(raw)


def _bytes(n: int) -> str:
    units = (("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10), ("G", 10**9), ("M", 10**6))
    for unit, size in (*units, ("k", 10**3)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n} bytes"


__all__ = [
    "DEFAULT_MAX_WORKERS",
    "DEFAULT_MAX_WORKERS_PER_PIPELINE",
    "MIN_MEMORY",
    "Limits",
    "WorkerCaps",
    "check_resources",
    "limits_of",
    "parse_memory",
]
