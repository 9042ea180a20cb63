"""Run with the python-pachyderm 1.8.6 venv (.venv-compat): a pipeline
stopped and started, and a union whose members share an input name,
through the published client; prints what it saw as JSON (one run for both,
the client's start-up being the slow part).

    PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python .venv-compat/bin/python \\
        tests/compat/pp_stop_union.py HOST PORT
"""

from __future__ import annotations

import collections
import collections.abc
import json
import sys
import time
from typing import Any

import python_pachyderm

# See pp_files.py: the 2018 client still uses collections.Iterable.
collections.Iterable = collections.abc.Iterable  # type: ignore[attr-defined]

PPS = python_pachyderm.pps_client.proto
PFS = python_pachyderm.pfs_client.proto


def main(host: str, port: int) -> dict[str, Any]:
    pfs = python_pachyderm.PfsClient(host=host, port=port)
    pps = python_pachyderm.PpsClient(host=host, port=port)
    return {"stop_start": stop_start(pfs, pps), "union": union(pfs, pps)}


def flush(pfs: Any, *commits: Any) -> int:
    # The client's flush_commit sets a field its own proto lacks (see
    # pp_files.py): the same RPC through its stub and messages.
    req = PFS.FlushCommitRequest(
        commits=[PFS.Commit(repo=PFS.Repo(name=c.repo.name), id=c.id) for c in commits]
    )
    return len(list(pfs.stub.FlushCommit(req, metadata=pfs.metadata)))


def jobs(pps: Any, pipeline: str) -> list[Any]:
    # The client's list_job cannot run (see pp_pipelines.py): its stub.
    req = PPS.ListJobRequest(pipeline=PPS.Pipeline(name=pipeline))
    return list(pps.stub.ListJob(req, metadata=pps.metadata).job_info)


def settled(pps: Any, job: Any) -> Any:
    req = PPS.InspectJobRequest(job=PPS.Job(id=job.job.id), block_state=True)
    return pps.stub.InspectJob(req, metadata=pps.metadata, timeout=60)


def state(pps: Any, job: Any) -> str:
    name: str = python_pachyderm.client.pps.pps_pb2.JobState.Name(job.state)
    return name


def read(pfs: Any, repo: str, path: str) -> str:
    return b"".join(pfs.get_file((repo, "master"), path)).decode()


def provenance(pfs: Any, repo: str) -> list[str]:
    [branch] = pfs.list_branch(repo)
    return sorted(p.repo.name for p in branch.provenance)


def stop_start(pfs: Any, pps: Any) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    pfs.create_repo("pp_held")
    with pfs.commit("pp_held", "master") as commit:
        pfs.put_file_bytes(commit, "/n", b"1\n")
    pps.create_pipeline(
        "pp_holder",
        transform=python_pachyderm.Transform(cmd=["sh"], stdin=["cp /pfs/pp_held/n /pfs/out/n"]),
        input=python_pachyderm.Input(atom=python_pachyderm.AtomInput(repo="pp_held", glob="/")),
    )
    flush(pfs, commit)
    # The client's stop_pipeline builds Pipeline(name) positionally, which
    # protobuf refuses (TypeError): the same request through its stub.
    stop = PPS.StopPipelineRequest(pipeline=PPS.Pipeline(name="pp_holder"))
    pps.stub.StopPipeline(stop, metadata=pps.metadata)
    seen["stopped"] = python_pachyderm.client.pps.pps_pb2.PipelineState.Name(
        pps.inspect_pipeline("pp_holder").state
    )
    seen["provenance_stopped"] = provenance(pfs, "pp_holder")
    for n in (2, 3):
        with pfs.commit("pp_held", "master") as commit:
            pfs.delete_file(commit, "/n")
            pfs.put_file_bytes(commit, "/n", b"%d\n" % n)
    seen["flushed_stopped"] = flush(pfs, commit)
    time.sleep(1.0)
    seen["jobs_stopped"] = len(jobs(pps, "pp_holder"))
    pps.start_pipeline("pp_holder")
    seen["provenance_started"] = provenance(pfs, "pp_holder")
    seen["flushed_started"] = flush(pfs, commit)
    # As 1.7, a job's state is set just after its output commit finishes:
    # flush_commit returns between the two, so wait on each job's state.
    seen["jobs_started"] = [state(pps, settled(pps, j)) for j in jobs(pps, "pp_holder")]
    seen["output"] = read(pfs, "pp_holder", "/n")
    return seen


def union(pfs: Any, pps: Any) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    heads = []
    for repo, names in (("pp_un1", ["a", "b"]), ("pp_un2", ["a", "c"])):
        pfs.create_repo(repo)
        with pfs.commit(repo, "master") as commit:
            for name in names:
                pfs.put_file_bytes(commit, f"/{name}", name.encode())
        heads.append(commit)
    seen["heads"] = [c.id for c in heads]
    members = [
        python_pachyderm.Input(atom=python_pachyderm.AtomInput(repo=r, glob="/*", name="in"))
        for r in ("pp_un1", "pp_un2")
    ]
    pps.create_pipeline(
        "pp_same",
        transform=python_pachyderm.Transform(
            cmd=["sh"],
            stdin=[
                'f=$(basename "$in")',
                'cp "$in" /pfs/out/$f',
                'echo "$in_COMMIT" > /pfs/out/$f.c',
            ],
        ),
        input=python_pachyderm.Input(union=members),
    )
    flush(pfs, *heads)
    [job] = jobs(pps, "pp_same")
    seen["job"] = [state(pps, job), job.data_total]
    datums = pps.list_datum(job.job.id).datum_infos
    seen["datum_ids"] = len({d.datum.id for d in datums})
    seen["output"] = {p: read(pfs, "pp_same", p) for p in ("/a", "/a.c", "/b", "/c.c")}
    return seen


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]))))
