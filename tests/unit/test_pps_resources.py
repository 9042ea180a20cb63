"""Resource limits, transform.user and worker caps of a pipeline spec."""

from __future__ import annotations

import sys

import pytest

from libs.api.pps import pps_pb2
from libs.errors import InvalidArgument
from services.pps.app.workers import LocalWorkerPool
from services.pps.domain.resources import (
    Limits,
    WorkerCaps,
    check_resources,
    limits_of,
    parse_memory,
)


@pytest.mark.parametrize(
    ("text", "size"),
    [("100", 100), ("10M", 10**7), ("64Mi", 64 << 20), ("1.5Gi", 3 << 29), ("512Ki", 512 << 10)],
)
def test_memory_quantities(text: str, size: int) -> None:
    assert parse_memory(text) == size


@pytest.mark.parametrize("text", ["lots", "", "-1M", "10 MB", "1e9", "M"])
def test_bad_memory_quantities_name_the_field(text: str) -> None:
    with pytest.raises(InvalidArgument, match=r"resource_limits\.memory .* is not a memory size"):
        parse_memory(text)


def _spec(**fields: object) -> pps_pb2.CreatePipelineRequest:
    spec = pps_pb2.CreatePipelineRequest(pipeline=pps_pb2.Pipeline(name="p"))
    for key, value in fields.items():
        if key == "user":
            spec.transform.user = str(value)
        else:
            getattr(spec, key).CopyFrom(value)
    return spec


def test_limits_of_a_spec() -> None:
    spec = _spec(
        resource_limits=pps_pb2.ResourceSpec(memory="10M", cpu=0.5),
        resource_requests=pps_pb2.ResourceSpec(cpu=2),
    )
    check_resources(spec)
    assert limits_of(spec) == Limits(memory=10**7, cpu=0.5, cpu_share=2.0)
    assert limits_of(_spec()) == Limits()


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"resource_limits": pps_pb2.ResourceSpec(memory="x")}, "resource_limits.memory"),
        ({"resource_requests": pps_pb2.ResourceSpec(memory="1Q")}, "resource_requests.memory"),
        ({"resource_limits": pps_pb2.ResourceSpec(cpu=-1)}, "resource_limits.cpu is -1"),
        ({"resource_limits": pps_pb2.ResourceSpec(cpu=0.001)}, "smallest limit is 0.01"),
        ({"resource_limits": pps_pb2.ResourceSpec(memory="100Ki")}, "below the minimum"),
        ({"user": "a b"}, "transform.user 'a b' is not a user"),
        ({"user": "1:2:3"}, "transform.user"),
    ],
)
def test_bad_resources_are_refused(fields: dict[str, object], error: str) -> None:
    with pytest.raises(InvalidArgument, match=error):
        check_resources(_spec(**fields))


@pytest.mark.parametrize("user", ["1000", "1000:1000", "nobody", "www-data:www-data", "root"])
def test_users_a_spec_may_name(user: str) -> None:
    check_resources(_spec(user=user))


def test_worker_caps() -> None:
    caps = WorkerCaps.from_env({"PACH_MAX_WORKERS_PER_PIPELINE": "4", "PACH_MAX_WORKERS": "10"})
    assert caps == WorkerCaps(per_pipeline=4, cluster=10)
    assert WorkerCaps.from_env({}) == WorkerCaps(per_pipeline=16, cluster=64)
    caps.check("p", 4, 6)
    with pytest.raises(InvalidArgument, match="cap of 4 workers per pipeline"):
        caps.check("p", 5, 0)
    with pytest.raises(InvalidArgument, match="cluster's cap is 10 workers"):
        caps.check("p", 4, 7)
    with pytest.raises(InvalidArgument, match="PACH_MAX_WORKERS must be a whole number"):
        WorkerCaps.from_env({"PACH_MAX_WORKERS": "0"})


async def test_a_local_pool_never_runs_more_than_the_cap() -> None:
    """A spec recorded before the caps existed still gets at most the cap."""
    pool = LocalWorkerPool(
        "p", command=(sys.executable, "-c", "import time; time.sleep(30)"), max_size=2, grace=0.5
    )
    try:
        await pool.scale(100000)
        assert pool.size == 2
    finally:
        await pool.stop()
    assert pool.size == 0
