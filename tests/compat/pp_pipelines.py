"""Run with the python-pachyderm 1.8.6 venv (.venv-compat): a pipeline
created, its jobs and datums listed and inspected, through the published
client; prints what it saw as JSON.

    PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python .venv-compat/bin/python \\
        tests/compat/pp_pipelines.py HOST PORT
"""

from __future__ import annotations

import collections
import collections.abc
import json
import sys
import time
from typing import Any

import grpc
import python_pachyderm

# See pp_files.py: the 2018 client still uses collections.Iterable.
collections.Iterable = collections.abc.Iterable  # type: ignore[attr-defined]


def main(host: str, port: int) -> dict[str, Any]:
    pfs = python_pachyderm.PfsClient(host=host, port=port)
    pps = python_pachyderm.PpsClient(host=host, port=port)
    seen: dict[str, Any] = {}
    pfs.create_repo("pp_words")
    with pfs.commit("pp_words", "master") as commit:
        pfs.put_file_bytes(commit, "/a.txt", b"alpha\n")
        pfs.put_file_bytes(commit, "/b.txt", b"beta\n")
    pps.create_pipeline(
        "pp_upper",
        transform=python_pachyderm.Transform(
            cmd=["sh"],
            stdin=[
                "for f in /pfs/pp_words/*; do",
                '  tr a-z A-Z < "$f" > "/pfs/out/$(basename "$f")"',
                '  echo "upper-cased $f"',
                "done",
            ],
        ),
        input=python_pachyderm.Input(atom=python_pachyderm.AtomInput(repo="pp_words", glob="/*")),
        description="from python-pachyderm",
    )
    seen["pipelines"] = [p.pipeline.name for p in pps.list_pipeline().pipeline_info]
    info = pps.inspect_pipeline("pp_upper")
    seen["inspected_pipeline"] = {
        "description": info.description,
        "cmd": list(info.transform.cmd),
        "glob": info.input.atom.glob,
        "output_branch": info.output_branch,
    }
    deadline = time.monotonic() + 60
    jobs: list[Any] = []
    # The client's list_job cannot run at all: it passes one Commit (or, with
    # no input commit, raises in commit_from) where its own proto has a
    # repeated field. Call the same RPC through the client's stub and
    # messages, as pp_files.py does for flush_commit.
    proto = python_pachyderm.pps_client.proto
    list_req = proto.ListJobRequest(
        pipeline=proto.Pipeline(name="pp_upper"),
        input_commit=[
            python_pachyderm.Commit(repo=python_pachyderm.Repo(name="pp_words"), id=commit.id)
        ],
    )
    while not jobs and time.monotonic() < deadline:
        jobs = list(pps.stub.ListJob(list_req, metadata=pps.metadata).job_info)
        time.sleep(0.2)
    job = pps.inspect_job(jobs[0].job.id, block_state=True)
    seen["job"] = {
        "state": python_pachyderm.client.pps.pps_pb2.JobState.Name(job.state),
        "processed": job.data_processed,
        "total": job.data_total,
        "output_repo": job.output_commit.repo.name,
        "pipeline": job.pipeline.name,
    }
    datums = pps.list_datum(job.job.id)
    seen["datums"] = sorted(
        (
            python_pachyderm.client.pps.pps_pb2.DatumState.Name(d.state),
            [f.file.path for f in d.data],
        )
        for d in datums.datum_infos
    )
    first = datums.datum_infos[0]
    inspected = pps.inspect_datum(
        python_pachyderm.Datum(id=first.datum.id, job=python_pachyderm.Job(id=job.job.id))
    )
    seen["inspected_datum_matches"] = inspected.datum.id == first.datum.id
    seen["output"] = {
        name: b"".join(pfs.get_file(("pp_upper", job.output_commit.id), name)).decode()
        for name in ("/a.txt", "/b.txt")
    }
    seen["logs"] = sorted(
        m.message.strip() for m in pps.get_logs(pipeline_name="pp_upper") if m.user
    )
    try:
        pps.inspect_pipeline("pp_missing")
        seen["missing"] = "found"
    except grpc.RpcError as err:
        seen["missing"] = err.code().name
    # delete_pipeline likewise sets fields its own proto does not have
    # (delete_jobs, delete_repo): the stub again.
    delete = proto.DeletePipelineRequest(pipeline=proto.Pipeline(name="pp_upper"))
    pps.stub.DeletePipeline(delete, metadata=pps.metadata)
    seen["after_delete"] = [p.pipeline.name for p in pps.list_pipeline().pipeline_info]
    return seen


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]))))
