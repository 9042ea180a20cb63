"""The must-show: a cluster with a bit of everything (repos, branches with
and without a head, commits with provenance and descriptions, split files
with a header and footer, a pipeline with stats and finished jobs, a
pipeline whose job failed, a cron pipeline) is extracted with
``pachctl extract > file`` and restored into a NEW cluster with
``pachctl restore < file``. Every list/inspect answer of the two clusters
is then the same, byte for byte and times included (a restore keeps the
events verbatim), and the restored cluster goes on working: one new input
commit runs exactly one new job, which succeeds, and no old job runs again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from libs.api.pps import pps_pb2 as pps
from libs.api.pps import pps_pb2_grpc
from tests.integration.test_pachctl_files import ok, pachctl
from tests.support.cluster import Cluster, wait_until

MAGIC = b"PACHEXT\x01"

COPY = {
    "pipeline": {"name": "copy"},
    "description": "copies raw, with stats",
    "transform": {
        "cmd": ["sh"],
        "stdin": ["echo copying $(ls /pfs/raw)", "cp /pfs/raw/* /pfs/out/"],
    },
    "input": {"atom": {"repo": "raw", "glob": "/*"}},
    "enable_stats": True,
}
FAILS = {
    "pipeline": {"name": "fails"},
    "transform": {"cmd": ["sh"], "stdin": ["echo failing", "exit 1"]},
    "input": {"atom": {"repo": "logs", "glob": "/"}},
}
TICKS = {
    "pipeline": {"name": "ticks"},
    "transform": {"cmd": ["sh"], "stdin": ["cp /pfs/tick/* /pfs/out/"]},
    "input": {"cron": {"name": "tick", "spec": "@every 1h"}},
}


def start(data_dir: Path) -> Cluster:
    c = Cluster(data_dir).start()
    try:
        c.wait_ready(60)
    except BaseException:
        c.kill()
        raise
    return c


def put(c: Cluster, repo: str, path: str, data: bytes, *flags: str) -> None:
    ok(pachctl(c, "put-file", repo, "master", path, "-f", "-", *flags, stdin=data))


def create(c: Cluster, tmp: Path, spec: dict[str, Any]) -> None:
    f = tmp / f"{spec['pipeline']['name']}.json"
    f.write_text(json.dumps(spec))
    ok(pachctl(c, "create-pipeline", "-f", str(f)))


def jobs(c: Cluster, pipeline: str = "") -> list[pps.JobInfo]:
    with grpc.insecure_channel(f"127.0.0.1:{c.grpc_port}") as channel:
        req = pps.ListJobRequest(pipeline=pps.Pipeline(name=pipeline) if pipeline else None)
        return list(pps_pb2_grpc.APIStub(channel).ListJob(req, timeout=30).job_info)


def finished(c: Cluster, counts: dict[str, int], timeout: float = 90) -> None:
    def done() -> bool:
        for name, n in counts.items():
            found = jobs(c, name)
            if len(found) != n or not all(j.HasField("finished") for j in found):
                return False
        return True

    wait_until(done, timeout)


def populate(c: Cluster, tmp: Path) -> None:
    ok(pachctl(c, "create-repo", "raw", "-d", "raw data"))
    put(c, "raw", "/a.txt", b"alpha\n")
    put(c, "raw", "/b.txt", b"beta\n" * 1000)
    ok(pachctl(c, "create-branch", "raw", "dev", "--head", "master"))
    ok(pachctl(c, "create-branch", "raw", "empty"))  # no head

    ok(pachctl(c, "create-repo", "logs"))
    put(c, "logs", "/lines", b"one\ntwo\nthree\n", "--split", "line", "--target-file-datums", "1")
    (tmp / "header").write_bytes(b"# header\n")
    ok(pachctl(c, "put-header", "logs", "master", "/lines", "-f", str(tmp / "header")))
    ok(pachctl(c, "put-footer", "logs", "master", "/lines", stdin=b"# footer\n"))

    create(c, tmp, COPY)
    create(c, tmp, FAILS)
    create(c, tmp, TICKS)
    commit = ok(pachctl(c, "start-commit", "raw", "master", "-m", "a described commit"))
    ok(
        pachctl(
            c, "put-file", "raw", commit.decode().strip(), "/c.txt", "-f", "-", stdin=b"gamma\n"
        )
    )
    ok(pachctl(c, "finish-commit", "raw", commit.decode().strip()))
    ok(pachctl(c, "flush-commit", "raw/master", "logs/master"))
    # copy: one job over a.txt and b.txt, one more for c.txt; fails: one job.
    finished(c, {"copy": 2, "fails": 1})
    states = sorted((j.pipeline.name, j.state) for j in jobs(c))
    assert states == [
        ("copy", pps.JOB_SUCCESS),
        ("copy", pps.JOB_SUCCESS),
        ("fails", pps.JOB_FAILURE),
    ], states


def names(c: Cluster) -> tuple[list[str], dict[str, list[str]], list[str], list[str]]:
    """Repos, each repo's commit ids, pipelines and job ids."""
    with grpc.insecure_channel(f"127.0.0.1:{c.grpc_port}") as channel:
        pfs_api = pfs_pb2_grpc.APIStub(channel)
        repos = [r.repo.name for r in pfs_api.ListRepo(pfs.ListRepoRequest(), timeout=30).repo_info]
        commits = {
            repo: [
                ci.commit.id
                for ci in pfs_api.ListCommit(
                    pfs.ListCommitRequest(repo=pfs.Repo(name=repo)), timeout=30
                ).commit_info
            ]
            for repo in repos
        }
        pps_api = pps_pb2_grpc.APIStub(channel)
        pipelines = [
            p.pipeline.name
            for p in pps_api.ListPipeline(pps.ListPipelineRequest(), timeout=30).pipeline_info
        ]
    return repos, commits, pipelines, [j.job.id for j in jobs(c)]


def raw_messages(text: bytes) -> list[dict[str, Any]]:
    """The JSON messages ``--raw`` prints one after another."""
    decoder = json.JSONDecoder()
    s, out, i = text.decode(), [], 0
    while i < len(s):
        if s[i].isspace():
            i += 1
            continue
        msg, i = decoder.raw_decode(s, i)
        out.append(msg)
    return out


def snapshot(c: Cluster) -> dict[str, bytes]:
    """Every list/inspect answer, and every file's bytes, by what was asked."""
    repos, commits, pipelines, job_ids = names(c)
    out: dict[str, bytes] = {"list-repo": ok(pachctl(c, "list-repo", "--raw"))}
    for repo in repos:
        out[f"inspect-repo {repo}"] = ok(pachctl(c, "inspect-repo", repo, "--raw"))
        out[f"list-branch {repo}"] = ok(pachctl(c, "list-branch", repo, "--raw"))
        out[f"list-commit {repo}"] = ok(pachctl(c, "list-commit", repo, "--raw"))
        for cid in commits[repo]:
            key = f"{repo}@{cid}"
            info = ok(pachctl(c, "inspect-commit", repo, cid, "--raw"))
            out[f"inspect-commit {key}"] = info
            if "finished" not in json.loads(info):
                continue
            listing = ok(pachctl(c, "glob-file", repo, cid, "**", "--raw"))
            out[f"glob-file {key}"] = listing
            out[f"list-file {key}"] = ok(pachctl(c, "list-file", repo, cid, "--raw"))
            for f in raw_messages(listing):
                if f.get("fileType", "FILE") == "FILE":
                    path = f["file"]["path"]
                    out[f"get-file {key}:{path}"] = ok(pachctl(c, "get-file", repo, cid, path))
    out["list-pipeline"] = ok(pachctl(c, "list-pipeline", "--raw"))
    for name in pipelines:
        out[f"inspect-pipeline {name}"] = ok(pachctl(c, "inspect-pipeline", name, "--raw"))
    out["list-job"] = ok(pachctl(c, "list-job", "--raw"))
    for job in job_ids:
        out[f"inspect-job {job}"] = ok(pachctl(c, "inspect-job", job, "--raw"))
        datums = ok(pachctl(c, "list-datum", job, "--raw"))
        out[f"list-datum {job}"] = datums
        for d in raw_messages(datums):
            did = d["datum"]["id"]
            out[f"inspect-datum {job}/{did}"] = ok(pachctl(c, "inspect-datum", job, did, "--raw"))
    return out


class Pair:
    def __init__(self, source: Cluster, target: Cluster, backup: Path) -> None:
        self.source = source
        self.target = target
        self.backup = backup


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    base = Path(tmp_path_factory.mktemp("roundtrip"))
    source = start(base / "source")
    try:
        populate(source, base)
        backup = base / "backup.extract"
        backup.write_bytes(ok(pachctl(source, "extract")))
        target = start(base / "target")
        try:
            yield Pair(source, target, backup)
        finally:
            target.kill()
    finally:
        source.kill()


@pytest.fixture(scope="module")
def restored(pair: Pair) -> Pair:
    assert pair.backup.read_bytes().startswith(MAGIC)
    ok(pachctl(pair.target, "restore", stdin=pair.backup.read_bytes()))
    return pair


def test_every_answer_is_the_same_after_a_restore(restored: Pair) -> None:
    before = snapshot(restored.source)
    after = snapshot(restored.target)
    assert sorted(after) == sorted(before)
    different = [key for key in before if before[key] != after[key]]
    assert not different, {k: (before[k][:400], after[k][:400]) for k in different[:3]}
    # Everything the source held is there: stats, a failed job, split files,
    # headless branches, cron's repo.
    assert any(k.startswith("get-file copy@") for k in before)
    assert any(k.startswith("inspect-commit ticks_tick@") for k in before) or (
        "inspect-repo ticks_tick" in before
    )
    assert b'"JOB_FAILURE"' in before["list-job"]
    assert b'"empty"' in before["list-branch raw"]
    assert ok(pachctl(restored.target, "inspect-cluster")) != ok(
        pachctl(restored.source, "inspect-cluster")
    )


def test_the_restored_cluster_runs_only_new_jobs(restored: Pair) -> None:
    c = restored.target
    old = {j.job.id: j for j in jobs(c)}
    old_raw = {job: ok(pachctl(c, "inspect-job", job, "--raw")) for job in old}
    put(c, "raw", "/d.txt", b"delta\n")
    ok(pachctl(c, "flush-commit", "raw/master"))
    finished(c, {"copy": 3, "fails": 1})
    now = jobs(c)
    new = [j for j in now if j.job.id not in old]
    assert len(now) == len(old) + 1 and len(new) == 1, [j.job.id for j in now]
    assert new[0].pipeline.name == "copy" and new[0].state == pps.JOB_SUCCESS, new[0]
    # Its datums: d.txt processed, the three old files skipped (already done
    # before the extract, their results restored with it).
    assert (new[0].data_processed, new[0].data_skipped) == (1, 3), new[0]
    for job, raw in old_raw.items():
        assert ok(pachctl(c, "inspect-job", job, "--raw")) == raw
    assert ok(pachctl(c, "get-file", "copy", "master", "/d.txt")) == b"delta\n"
    assert ok(pachctl(c, "get-file", "copy", "master", "/a.txt")) == b"alpha\n"
    # The workers ran user code once, for the new job's one datum. Logs are
    # not part of an extract (they live in PPS_LOGS, as 1.7's lived in its
    # pods), so a line about an old datum would mean its code ran again.
    logs = ok(pachctl(c, "get-logs", "--pipeline", "copy")).decode()
    assert logs.count("copying d.txt") == 1, logs
    for name in ("a.txt", "b.txt", "c.txt"):
        assert f"copying {name}" not in logs, logs
