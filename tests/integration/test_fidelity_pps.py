"""pps as Pachyderm 1.7 shows it, through pachctl and gRPC: an incremental
job's datum counts (processed + skipped / total, failed), list-job -o
repo/branch, get-logs --tail counting the lines pachctl prints, and
restart-datum on a running (stuck) datum and on a failed job's datum, with a
message saying what happened."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from libs.api.pps import pps_pb2 as pps
from libs.api.pps import pps_pb2_grpc
from tests.integration.test_pachctl_file_ops import fails
from tests.integration.test_pachctl_files import ok, pachctl
from tests.support.cluster import Cluster, running


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from running(Path(tmp_path_factory.mktemp("fidelity-pps")) / "data")


def create(cluster: Cluster, tmp: Path, spec: dict[str, object]) -> None:
    f = tmp / f"{spec['pipeline']['name']}.json"  # type: ignore[index]
    f.write_text(json.dumps(spec))
    ok(pachctl(cluster, "create-pipeline", "-f", str(f)))


def put(cluster: Cluster, repo: str, files: dict[str, bytes]) -> None:
    ok(pachctl(cluster, "start-commit", repo, "master"))
    for name, data in files.items():
        ok(pachctl(cluster, "put-file", repo, "master", name, "-o", "-f", "-", stdin=data))
    ok(pachctl(cluster, "finish-commit", repo, "master"))


def jobs(cluster: Cluster, pipeline: str) -> list[pps.JobInfo]:
    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        req = pps.ListJobRequest(pipeline=pps.Pipeline(name=pipeline))
        return list(pps_pb2_grpc.APIStub(channel).ListJob(req, timeout=30).job_info)


def table(text: bytes) -> list[str]:
    return text.decode().splitlines()[1:]


def test_incremental_counts_list_job_by_branch_and_tail(cluster: Cluster, tmp_path: Path) -> None:
    ok(pachctl(cluster, "create-repo", "inc_in"))
    create(
        cluster,
        tmp_path,
        {
            "pipeline": {"name": "inc"},
            "transform": {
                "cmd": ["sh"],
                "stdin": [
                    "for f in /pfs/inc_in/*; do echo seen $(basename $f); done",
                    "cp /pfs/inc_in/* /pfs/out/",
                ],
            },
            "input": {"atom": {"repo": "inc_in", "glob": "/*"}},
        },
    )
    create(
        cluster,
        tmp_path,
        {
            "pipeline": {"name": "inc_incr"},
            "transform": {"cmd": ["sh"], "stdin": ["cp /pfs/inc_in/* /pfs/out/"]},
            "input": {"atom": {"repo": "inc_in", "glob": "/*"}},
            "incremental": True,
        },
    )
    put(cluster, "inc_in", {"/a": b"1", "/b": b"2", "/c": b"3"})
    ok(pachctl(cluster, "flush-commit", "inc_in/master"))
    # One changed, one new, two unchanged: 2 processed + 2 skipped of 4.
    put(cluster, "inc_in", {"/a": b"changed", "/d": b"4"})
    ok(pachctl(cluster, "flush-commit", "inc_in/master"))
    newest, first = jobs(cluster, "inc")
    assert first.state == pps.JOB_SUCCESS and newest.state == pps.JOB_SUCCESS
    assert (first.data_processed, first.data_skipped, first.data_total) == (3, 0, 3)
    assert (newest.data_processed, newest.data_skipped, newest.data_total) == (2, 2, 4)
    assert newest.data_failed == 0
    # An incremental pipeline runs only the new and changed datums too, and
    # counts every datum as 1.7 does: the unchanged ones skipped.
    newest_incr, first_incr = jobs(cluster, "inc_incr")
    assert (first_incr.data_processed, first_incr.data_skipped, first_incr.data_total) == (3, 0, 3)
    counts = (newest_incr.data_processed, newest_incr.data_skipped, newest_incr.data_total)
    assert counts == (2, 2, 4)
    assert newest_incr.state == pps.JOB_SUCCESS
    out = ok(pachctl(cluster, "get-file", "inc_incr", "master", "/a"))
    assert out == b"changed"
    assert ok(pachctl(cluster, "get-file", "inc_incr", "master", "/b")) == b"2"
    rows = table(ok(pachctl(cluster, "list-job", "-p", "inc")))
    assert "2 + 2 / 4" in rows[0] and "3 + 0 / 3" in rows[1], rows
    detail = ok(pachctl(cluster, "inspect-job", newest.job.id)).decode()
    assert "Processed: 2\nFailed: 0\nSkipped: 2\nTotal: 4\n" in detail, detail

    # list-job -o repo/branch: the job whose output commit is the branch's head.
    by_branch = table(ok(pachctl(cluster, "list-job", "-o", "inc/master")))
    assert len(by_branch) == 1 and by_branch[0].startswith(newest.job.id), by_branch
    assert table(ok(pachctl(cluster, "list-job", "-o", "inc/master^"))) != by_branch

    # get-logs --tail N: the last N lines the user sees (user code's, not the
    # worker's own lines about the datum).
    tail = ok(pachctl(cluster, "get-logs", "-p", "inc", "-t", "2")).decode().splitlines()
    assert len(tail) == 2 and all(line.startswith("seen ") for line in tail), tail


def logs_of(cluster: Cluster, pipeline: str) -> list[str]:
    return ok(pachctl(cluster, "get-logs", "-p", pipeline)).decode().splitlines()


def wait_for(cond: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


def test_restart_datum_restarts_a_stuck_datum(cluster: Cluster, tmp_path: Path) -> None:
    ok(pachctl(cluster, "create-repo", "st_in"))
    create(
        cluster,
        tmp_path,
        {
            "pipeline": {"name": "stuck"},
            "transform": {"cmd": ["sh"], "stdin": ["echo start $(ls /pfs/st_in)", "sleep 600"]},
            "input": {"atom": {"repo": "st_in", "glob": "/*"}},
        },
    )
    put(cluster, "st_in", {"/x": b"1"})
    wait_for(lambda: "start x" in logs_of(cluster, "stuck"))
    (job,) = jobs(cluster, "stuck")
    assert job.state == pps.JOB_RUNNING
    # A filter no running datum matches: nothing happens, and it says so.
    fails(
        pachctl(cluster, "restart-datum", job.job.id, "/nope"),
        "no running or failed datum matching ['/nope']: nothing restarted",
    )
    said = ok(pachctl(cluster, "restart-datum", job.job.id, "/x")).decode()
    assert said.startswith("Restarted running datum(s) ") and job.job.id in said, said
    assert said.rstrip().endswith("their user code was stopped and runs again"), said
    # The user code ran again (and the try it lost is not one of its tries).
    wait_for(lambda: logs_of(cluster, "stuck").count("start x") == 2)
    assert jobs(cluster, "stuck")[0].state == pps.JOB_RUNNING
    # Over HTTP, the answer names the datum restarted.
    body = json.dumps({"job": {"id": job.job.id}, "data_filters": ["/x"]}).encode()
    url = f"http://127.0.0.1:{cluster.http_port}/api/pps/RestartDatum"
    with urllib.request.urlopen(
        urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}),
        timeout=30,
    ) as resp:
        answer = json.loads(resp.read())
    assert len(answer["running"]) == 1 and answer["running"][0] in said, answer
    wait_for(lambda: logs_of(cluster, "stuck").count("start x") == 3)
    ok(pachctl(cluster, "stop-job", job.job.id))


def test_restart_datum_of_a_failed_job_says_why_not(cluster: Cluster, tmp_path: Path) -> None:
    ok(pachctl(cluster, "create-repo", "fl_in"))
    create(
        cluster,
        tmp_path,
        {
            "pipeline": {"name": "flaky"},
            "transform": {"cmd": ["sh"], "stdin": ["exit 1"]},
            "input": {"atom": {"repo": "fl_in", "glob": "/*"}},
            "datum_tries": 1,
        },
    )
    put(cluster, "fl_in", {"/y": b"1"})
    wait_for(lambda: [j.state for j in jobs(cluster, "flaky")] == [pps.JOB_FAILURE])
    (job,) = jobs(cluster, "flaky")
    assert job.state == pps.JOB_FAILURE
    fails(
        pachctl(cluster, "restart-datum", job.job.id, "/y"),
        f"job {job.job.id} has finished (JOB_FAILURE): the datums of a finished job are not "
        "restarted",
    )
    # Over gRPC: FAILED_PRECONDITION, nothing changed.
    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        req = pps.RestartDatumRequest(job=job.job, data_filters=["/y"])
        with pytest.raises(grpc.RpcError) as err:
            pps_pb2_grpc.APIStub(channel).RestartDatum(req, timeout=30)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert jobs(cluster, "flaky")[0].state == pps.JOB_FAILURE
