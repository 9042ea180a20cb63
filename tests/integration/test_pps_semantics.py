"""Pipeline semantics of Pachyderm 1.7 through pachctl, as a user sees them:
jobs run one at a time in output-commit order; a stopped pipeline makes
no jobs and start-pipeline runs one over the current inputs; delete-commit
on an input takes its job and output commit along; union inputs (whose
members may share a name); update-pipeline with and without --reprocess;
incremental pipelines; job_timeout; YAML specs."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from libs.api.pps import pps_pb2 as pps
from libs.api.pps import pps_pb2_grpc
from tests.integration.test_pachctl_files import ok, pachctl
from tests.support.cluster import Cluster, running, wait_until


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from running(Path(tmp_path_factory.mktemp("pps-semantics")) / "data")


def put(cluster: Cluster, repo: str, path: str, data: bytes, *flags: str) -> None:
    ok(pachctl(cluster, "put-file", repo, "master", path, "-f", "-", *flags, stdin=data))


def get(cluster: Cluster, repo: str, ref: str, path: str) -> bytes:
    return ok(pachctl(cluster, "get-file", repo, ref, path))


def create(cluster: Cluster, tmp: Path, spec: dict[str, object], *flags: str) -> None:
    f = tmp / f"{spec['pipeline']['name']}.json"  # type: ignore[index]
    f.write_text(json.dumps(spec))
    ok(pachctl(cluster, "create-pipeline", "-f", str(f), *flags))


def jobs(cluster: Cluster, pipeline: str) -> list[pps.JobInfo]:
    """Newest first."""
    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        req = pps.ListJobRequest(pipeline=pps.Pipeline(name=pipeline))
        infos = pps_pb2_grpc.APIStub(channel).ListJob(req, timeout=30)
    return list(infos.job_info)


def all_done(cluster: Cluster, pipeline: str, n: int, timeout: float = 60) -> list[pps.JobInfo]:
    def done() -> bool:
        found = jobs(cluster, pipeline)
        return len(found) == n and all(j.HasField("finished") for j in found)

    wait_until(done, timeout)
    return jobs(cluster, pipeline)


def head_of(cluster: Cluster, repo: str) -> str:
    head = ok(pachctl(cluster, "inspect-commit", repo, "master")).decode()
    found = re.search(r"Commit:\s+\w+/(\w+)", head)
    assert found, head
    return found.group(1)


def output_commits(cluster: Cluster, repo: str) -> int:
    listed = ok(pachctl(cluster, "list-commit", repo)).decode().splitlines()
    return len(listed) - 1  # the header


def test_jobs_run_in_order(cluster: Cluster, tmp_path: Path) -> None:
    ok(pachctl(cluster, "create-repo", "seq"))
    put(cluster, "seq", "/n", b"1\n")
    spec = {
        "pipeline": {"name": "order"},
        "transform": {"cmd": ["sh"], "stdin": ["sleep 0.3", "cp /pfs/seq/n /pfs/out/n"]},
        "input": {"atom": {"repo": "seq", "glob": "/"}},
    }
    create(cluster, tmp_path, spec)
    for n in (2, 3, 4):
        put(cluster, "seq", "/n", b"%d\n" % n, "-o")
    ok(pachctl(cluster, "flush-commit", "seq/master"))
    done = all_done(cluster, "order", 4)
    assert [j.state for j in done] == [pps.JOB_SUCCESS] * 4
    # Oldest first: each job saw its own input commit, and each finished
    # before the next one started running.
    done.reverse()
    outputs = [get(cluster, "order", j.output_commit.id, "/n") for j in done]
    assert outputs == [b"1\n", b"2\n", b"3\n", b"4\n"]
    finished = [j.finished.ToNanoseconds() for j in done]
    assert finished == sorted(finished)
    assert get(cluster, "order", "master", "/n") == b"4\n"


def test_a_stopped_pipeline_makes_no_jobs_and_start_runs_one(
    cluster: Cluster, tmp_path: Path
) -> None:
    """1.7: stop-pipeline removes the output branch's provenance, so new
    input commits open no output commit and create no job; start-pipeline
    restores it, which runs one job over the current inputs."""
    ok(pachctl(cluster, "create-repo", "held"))
    put(cluster, "held", "/n", b"1\n")
    spec = {
        "pipeline": {"name": "holder"},
        "transform": {"cmd": ["sh"], "stdin": ["cp /pfs/held/n /pfs/out/n"]},
        "input": {"atom": {"repo": "held", "glob": "/"}},
    }
    create(cluster, tmp_path, spec)
    all_done(cluster, "holder", 1)

    ok(pachctl(cluster, "stop-pipeline", "holder"))
    assert re.search(r"^holder\s.*paused", ok(pachctl(cluster, "list-pipeline")).decode(), re.M)
    branch = ok(pachctl(cluster, "inspect-branch", "holder", "master")).decode()
    assert "held" not in branch, branch  # no provenance while stopped
    for n in (2, 3, 4):
        put(cluster, "held", "/n", b"%d\n" % n, "-o")
    ok(pachctl(cluster, "flush-commit", "held/master"))
    time.sleep(1.5)
    assert len(jobs(cluster, "holder")) == 1
    assert output_commits(cluster, "holder") == 1
    # Stopping again changes nothing.
    ok(pachctl(cluster, "stop-pipeline", "holder"))

    ok(pachctl(cluster, "start-pipeline", "holder"))
    assert "held" in ok(pachctl(cluster, "inspect-branch", "holder", "master")).decode()
    ok(pachctl(cluster, "flush-commit", "held/master"))
    done = all_done(cluster, "holder", 2)
    assert [j.state for j in done] == [pps.JOB_SUCCESS] * 2
    assert get(cluster, "holder", done[0].output_commit.id, "/n") == b"4\n"
    assert output_commits(cluster, "holder") == 2
    # Starting a running pipeline again runs nothing more; new input does.
    ok(pachctl(cluster, "start-pipeline", "holder"))
    time.sleep(1.0)
    assert len(jobs(cluster, "holder")) == 2
    put(cluster, "held", "/n", b"5\n", "-o")
    ok(pachctl(cluster, "flush-commit", "held/master"))
    all_done(cluster, "holder", 3)
    assert get(cluster, "holder", "master", "/n") == b"5\n"


def test_delete_commit_of_an_input_deletes_its_job_and_output(
    cluster: Cluster, tmp_path: Path
) -> None:
    ok(pachctl(cluster, "create-repo", "casc"))
    put(cluster, "casc", "/a", b"a\n")
    spec = {
        "pipeline": {"name": "cascade"},
        "transform": {"cmd": ["sh"], "stdin": ["cp -r /pfs/casc/. /pfs/out/"]},
        "input": {"atom": {"repo": "casc", "glob": "/"}},
    }
    create(cluster, tmp_path, spec)
    put(cluster, "casc", "/b", b"b\n")
    ok(pachctl(cluster, "flush-commit", "casc/master"))
    before = all_done(cluster, "cascade", 2)
    head = ok(pachctl(cluster, "inspect-commit", "casc", "master")).decode()
    commit_id = re.search(r"Commit:\s+casc/(\w+)", head)
    assert commit_id, head
    ok(pachctl(cluster, "delete-commit", "casc", commit_id.group(1)))

    wait_until(lambda: len(jobs(cluster, "cascade")) == 1)
    [left] = jobs(cluster, "cascade")
    assert left.job.id == before[1].job.id  # the older job stays
    listed = ok(pachctl(cluster, "list-commit", "cascade")).decode()
    assert before[0].output_commit.id not in listed
    assert before[1].output_commit.id in listed
    assert get(cluster, "cascade", "master", "/a") == b"a\n"


def test_union_is_the_sum_of_its_inputs(cluster: Cluster, tmp_path: Path) -> None:
    for repo, names in (("u1", ["a", "b"]), ("u2", ["c"])):
        ok(pachctl(cluster, "create-repo", repo))
        ok(pachctl(cluster, "start-commit", repo, "master"))
        for name in names:
            put(cluster, repo, f"/{name}", name.encode())
        ok(pachctl(cluster, "finish-commit", repo, "master"))
    spec = {
        "pipeline": {"name": "unioned"},
        "transform": {
            "cmd": ["sh"],
            "stdin": ["cp /pfs/u1/* /pfs/u2/* /pfs/out/ 2>/dev/null; true"],
        },
        "input": {
            "union": [
                {"atom": {"repo": "u1", "glob": "/*"}},
                {"atom": {"repo": "u2", "glob": "/*"}},
            ]
        },
    }
    create(cluster, tmp_path, spec)
    [job] = all_done(cluster, "unioned", 1)
    assert job.state == pps.JOB_SUCCESS and job.data_total == 3, job
    listing = ok(pachctl(cluster, "list-file", "unioned", "master")).decode()
    assert sorted(re.findall(r"^/?([abc])\s", listing, re.M)) == ["a", "b", "c"]


def test_union_members_may_share_a_name(cluster: Cluster, tmp_path: Path) -> None:
    """1.7: several repos of a union may all be mounted as /pfs/in; each
    datum sees its own repo there, with its own ``in`` and ``in_COMMIT``.
    The same path and content in two members are two datums (two ids), each
    with its own output, also when a later job reuses them."""
    heads = {}
    for repo, names in (("same1", ["a", "b"]), ("same2", ["c"])):
        ok(pachctl(cluster, "create-repo", repo))
        ok(pachctl(cluster, "start-commit", repo, "master"))
        for name in names:
            put(cluster, repo, f"/{name}", name.encode())
        if repo == "same2":
            # The same path with the very same content (refs, so node hash).
            ok(pachctl(cluster, "copy-file", "same1", "master", "/a", repo, "master", "/a"))
        ok(pachctl(cluster, "finish-commit", repo, "master"))
        heads[repo] = head_of(cluster, repo)
    spec = {
        "pipeline": {"name": "same_named"},
        "transform": {
            "cmd": ["sh"],
            "stdin": [
                'f=$(basename "$in")',
                'cp "$in" /pfs/out/$f',
                'echo "$in $in_COMMIT" > /pfs/out/$f.env',
            ],
        },
        "input": {
            "union": [
                {"atom": {"repo": "same1", "glob": "/*", "name": "in"}},
                {"atom": {"repo": "same2", "glob": "/*", "name": "in"}},
            ]
        },
    }
    create(cluster, tmp_path, spec)
    [job] = all_done(cluster, "same_named", 1)
    assert job.state == pps.JOB_SUCCESS and job.data_total == 4, job
    # Each member's commit, in inspect-job and in list-datum.
    assert [u.atom.commit for u in job.input.union] == [heads["same1"], heads["same2"]]
    listed = ok(pachctl(cluster, "list-datum", job.job.id)).decode().splitlines()[1:]
    assert len({line.split()[0] for line in listed}) == len(listed) == 4, listed
    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        req = pps.ListDatumRequest(job=job.job)
        datums = pps_pb2_grpc.APIStub(channel).ListDatum(req, timeout=30).datum_infos
    assert [(f.file.commit.repo.name, f.file.path) for d in datums for f in d.data] == [
        ("same1", "/a"),
        ("same1", "/b"),
        ("same2", "/a"),
        ("same2", "/c"),
    ]

    def check() -> None:
        # /a from both members, concatenated in datum order.
        assert get(cluster, "same_named", "master", "/a") == b"aa"
        env = get(cluster, "same_named", "master", "/a.env").decode()
        assert env == f"/pfs/in/a {heads['same1']}\n/pfs/in/a {heads['same2']}\n"
        for name, repo in (("b", "same1"), ("c", "same2")):
            assert get(cluster, "same_named", "master", f"/{name}") == name.encode()
            env = get(cluster, "same_named", "master", f"/{name}.env").decode()
            assert env == f"/pfs/in/{name} {heads[repo]}\n"

    check()
    # A new file in one member: a job that runs only it and reuses the
    # outputs of the four datums it has already processed, each its own.
    put(cluster, "same1", "/d", b"d")
    second = all_done(cluster, "same_named", 2)[0]
    assert second.state == pps.JOB_SUCCESS, second
    assert (second.data_total, second.data_skipped, second.data_processed) == (5, 4, 1), second
    check()
    assert get(cluster, "same_named", "master", "/d") == b"d"

    # A name still may not clash with an input crossed with the union.
    spec = {
        "pipeline": {"name": "same_clash"},
        "transform": {"cmd": ["true"]},
        "input": {
            "cross": [
                {"union": spec["input"]["union"]},  # type: ignore[index]
                {"atom": {"repo": "u1", "glob": "/", "name": "in"}},
            ]
        },
    }
    f = tmp_path / "same_clash.json"
    f.write_text(json.dumps(spec))
    failed = pachctl(cluster, "create-pipeline", "-f", str(f))
    assert failed.returncode != 0
    assert "input name 'in' is used more than once" in failed.stderr.decode(), failed.stderr
    assert "same_clash" not in ok(pachctl(cluster, "list-pipeline")).decode()


def test_update_keeps_datums_and_reprocess_runs_them_again(
    cluster: Cluster, tmp_path: Path
) -> None:
    ok(pachctl(cluster, "create-repo", "upd"))
    ok(pachctl(cluster, "start-commit", "upd", "master"))
    put(cluster, "upd", "/x", b"x")
    put(cluster, "upd", "/y", b"y")
    ok(pachctl(cluster, "finish-commit", "upd", "master"))
    spec = {
        "pipeline": {"name": "upd_p"},
        "transform": {"cmd": ["sh"], "stdin": ["cp /pfs/upd/* /pfs/out/"]},
        "input": {"atom": {"repo": "upd", "glob": "/*"}},
    }
    create(cluster, tmp_path, spec)
    all_done(cluster, "upd_p", 1)
    spec["description"] = "same code, new description"
    f = tmp_path / "upd.json"
    f.write_text(json.dumps(spec))
    ok(pachctl(cluster, "update-pipeline", "-f", str(f)))
    newest = all_done(cluster, "upd_p", 2)[0]
    assert (newest.data_processed, newest.data_skipped) == (0, 2), newest
    ok(pachctl(cluster, "update-pipeline", "-f", str(f), "--reprocess"))
    newest = all_done(cluster, "upd_p", 3)[0]
    assert (newest.data_processed, newest.data_skipped) == (2, 0), newest
    assert newest.pipeline_version == 3
    assert get(cluster, "upd_p", "master", "/x") == b"x"


def test_incremental_sees_only_new_input_and_its_previous_output(
    cluster: Cluster, tmp_path: Path
) -> None:
    ok(pachctl(cluster, "create-repo", "inc_in"))
    put(cluster, "inc_in", "/a", b"a")
    spec = {
        "pipeline": {"name": "inc"},
        "transform": {
            "cmd": ["sh"],
            "stdin": ["ls /pfs/inc_in > /pfs/out/last", "ls /pfs/inc_in >> /pfs/out/seen"],
        },
        "input": {"atom": {"repo": "inc_in", "glob": "/"}},
        "incremental": True,
    }
    create(cluster, tmp_path, spec)
    all_done(cluster, "inc", 1)
    put(cluster, "inc_in", "/b", b"b")
    ok(pachctl(cluster, "flush-commit", "inc_in/master"))
    all_done(cluster, "inc", 2)
    assert get(cluster, "inc", "master", "/last") == b"b\n"
    assert get(cluster, "inc", "master", "/seen") == b"a\nb\n"


def test_job_timeout_fails_the_job(cluster: Cluster, tmp_path: Path) -> None:
    ok(pachctl(cluster, "create-repo", "slow_in"))
    put(cluster, "slow_in", "/a", b"a")
    yaml_spec = tmp_path / "slow.yaml"
    yaml_spec.write_text(
        "pipeline:\n  name: slow\n"
        "transform:\n  cmd: [sleep, '30']\n"
        "input:\n  atom:\n    repo: slow_in\n    glob: /\n"
        "job_timeout: 2s\n"
    )
    ok(pachctl(cluster, "create-pipeline", "-f", str(yaml_spec)))
    [job] = all_done(cluster, "slow", 1, timeout=30)
    assert job.state == pps.JOB_FAILURE
    assert "timeout" in job.reason or "timed out" in job.reason, job.reason


def test_enable_stats_keeps_each_datums_logs_and_timings(cluster: Cluster, tmp_path: Path) -> None:
    ok(pachctl(cluster, "create-repo", "st_in"))
    ok(pachctl(cluster, "start-commit", "st_in", "master"))
    put(cluster, "st_in", "/a", b"a")
    put(cluster, "st_in", "/b", b"b")
    ok(pachctl(cluster, "finish-commit", "st_in", "master"))
    spec = {
        "pipeline": {"name": "st"},
        "transform": {
            "cmd": ["sh"],
            "stdin": ["echo working on /pfs/st_in/*", "cp /pfs/st_in/* /pfs/out/"],
        },
        "input": {"atom": {"repo": "st_in", "glob": "/*"}},
        "enable_stats": True,
    }
    create(cluster, tmp_path, spec)
    [job] = all_done(cluster, "st", 1)
    assert job.state == pps.JOB_SUCCESS and job.stats_commit.id, job
    # 1.7's layout: /<datum id>/{job:<id>, logs, stats, pfs/<input>, pfs/out}
    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        req = pps.ListDatumRequest(job=pps.Job(id=job.job.id))
        datums = pps_pb2_grpc.APIStub(channel).ListDatum(req, timeout=30).datum_infos
    assert len(datums) == 2
    for d in datums:
        listing = ok(pachctl(cluster, "list-file", "st", "stats", f"/{d.datum.id}")).decode()
        for name in (f"job:{job.job.id}", "logs", "stats", "pfs"):
            assert name in listing, listing
        logs = get(cluster, "st", "stats", f"/{d.datum.id}/logs").decode()
        assert "working on /pfs/st_in/" in logs
        timings = json.loads(get(cluster, "st", "stats", f"/{d.datum.id}/stats"))
        assert "processTime" in timings or "process_time" in timings
        name = d.data[0].file.path
        assert get(cluster, "st", "stats", f"/{d.datum.id}/pfs/out{name}") == name[1:].encode()
    # The output branch itself holds only the outputs.
    assert get(cluster, "st", "master", "/a") == b"a"
