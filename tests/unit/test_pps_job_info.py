"""JobInfo as pps builds it from the jobs read model and the spec: fields
the spec leaves unset stay unset (1.7's nil), set ones come through."""

from __future__ import annotations

from typing import Any

from google.protobuf.duration_pb2 import Duration

from libs.api.pps import pps_pb2 as pps
from services.pps.app.jobs import job_info


def doc() -> dict[str, Any]:
    return {
        "id": "a" * 32,
        "pipeline": "edges",
        "pipeline_version": 1,
        "output_repo": "edges",
        "output_commit": "b" * 32,
        "output_branch": "master",
        "state": pps.JOB_SUCCESS,
        "reason": "",
        "restart": 0,
        "data_processed": 2,
        "data_skipped": 1,
        "data_total": 3,
        "data_failed": 0,
        "stats": None,
        "salt": "s",
        "parent_job": "",
        "stats_commit": "",
        "created_ns": 1_000_000_000,
        "finished_ns": 2_000_000_000,
        "inputs": [["images", "images", "master", "c" * 32, ""]],
    }


def test_unset_spec_fields_stay_unset_and_set_ones_come_through() -> None:
    spec = pps.CreatePipelineRequest(
        pipeline=pps.Pipeline(name="edges"),
        transform=pps.Transform(cmd=["true"]),
        input=pps.Input(atom=pps.AtomInput(name="images", repo="images", glob="/*")),
        datum_timeout=Duration(seconds=30),
    )
    info = job_info(doc(), spec)
    for field in ("egress", "service", "resource_limits", "job_timeout", "chunk_spec"):
        assert not info.HasField(field), field  # type: ignore[arg-type]
    assert info.datum_timeout.seconds == 30
    assert info.input.atom.commit == "c" * 32
    assert (info.data_processed, info.data_skipped, info.data_total) == (2, 1, 3)
    assert info.finished.seconds == 2
