"""update-pipeline in the middle of a chain (issue 17): every pipeline
downstream of the updated one runs on its new output, with provenance naming
that commit, through a 3-stage chain and a cross, with and without
--reprocess; through pachctl."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from libs.api.pps import pps_pb2 as pps
from libs.api.pps import pps_pb2_grpc
from tests.integration.test_pachctl_files import ok, pachctl
from tests.support.cluster import Cluster, running


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from running(Path(tmp_path_factory.mktemp("pps-chain")) / "data")


def create(cluster: Cluster, tmp: Path, spec: dict[str, object], *flags: str) -> None:
    f = tmp / f"{spec['pipeline']['name']}.json"  # type: ignore[index]
    f.write_text(json.dumps(spec))
    command = "update-pipeline" if "--update" in flags else "create-pipeline"
    rest = [flag for flag in flags if flag != "--update"]
    ok(pachctl(cluster, command, "-f", str(f), *rest))


def copy(name: str, repo: str, glob: str = "/") -> dict[str, object]:
    return {
        "pipeline": {"name": name},
        "transform": {"cmd": ["sh"], "stdin": [f"cp -r /pfs/{repo}/. /pfs/out/"]},
        "input": {"atom": {"repo": repo, "glob": glob}},
    }


def upstream(version: str) -> dict[str, object]:
    return {
        "pipeline": {"name": "ch_u1"},
        "transform": {
            "cmd": ["sh"],
            "stdin": ["cp -r /pfs/ch_src/. /pfs/out/", f"echo {version} > /pfs/out/ver"],
        },
        "input": {"atom": {"repo": "ch_src", "glob": "/"}},
    }


CROSS = {
    "pipeline": {"name": "ch_x"},
    "transform": {
        "cmd": ["sh"],
        "stdin": ["cat /pfs/ch_src/a /pfs/ch_u1/ver > /pfs/out/both"],
    },
    "input": {
        "cross": [
            {"atom": {"repo": "ch_src", "glob": "/"}},
            {"atom": {"repo": "ch_u1", "glob": "/"}},
        ]
    },
}


def inspect_commit(cluster: Cluster, repo: str, ref: str) -> pfs.CommitInfo:
    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        req = pfs.InspectCommitRequest(commit=pfs.Commit(repo=pfs.Repo(name=repo), id=ref))
        info: pfs.CommitInfo = pfs_pb2_grpc.APIStub(channel).InspectCommit(req, timeout=30)
    return info


def job_of(cluster: Cluster, repo: str, output_commit: str) -> pps.JobInfo:
    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        req = pps.ListJobRequest(pipeline=pps.Pipeline(name=repo))
        infos = pps_pb2_grpc.APIStub(channel).ListJob(req, timeout=30).job_info
    [job] = [j for j in infos if j.output_commit.id == output_commit]
    return job


def provenance(info: pfs.CommitInfo) -> dict[str, str]:
    return {c.repo.name: c.id for c in info.provenance}


def check_downstream(cluster: Cluster, version: str) -> None:
    """u1's head holds ``version``; d1, e1 and x ran on it, their heads'
    provenance naming it, their jobs finished with that u1 commit as input."""
    u1 = inspect_commit(cluster, "ch_u1", "master")
    assert u1.HasField("finished")
    expected = f"{version}\n".encode()
    assert ok(pachctl(cluster, "get-file", "ch_u1", "master", "/ver")) == expected
    d1 = inspect_commit(cluster, "ch_d1", "master")
    for repo in ("ch_d1", "ch_e1", "ch_x"):
        head = inspect_commit(cluster, repo, "master")
        assert head.HasField("finished"), repo
        assert provenance(head)["ch_u1"] == u1.commit.id, (repo, provenance(head))
        job = job_of(cluster, repo, head.commit.id)
        assert job.state == pps.JOB_SUCCESS, (repo, job)
        if repo == "ch_e1":
            assert provenance(head)["ch_d1"] == d1.commit.id
    assert ok(pachctl(cluster, "get-file", "ch_d1", "master", "/ver")) == expected
    assert ok(pachctl(cluster, "get-file", "ch_e1", "master", "/ver")) == expected
    assert ok(pachctl(cluster, "get-file", "ch_e1", "master", "/a")) == b"a\n"
    assert ok(pachctl(cluster, "get-file", "ch_x", "master", "/both")) == b"a\n" + expected


def test_update_in_a_chain_reruns_everything_downstream(cluster: Cluster, tmp_path: Path) -> None:
    ok(pachctl(cluster, "create-repo", "ch_src"))
    ok(pachctl(cluster, "put-file", "ch_src", "master", "/a", "-f", "-", stdin=b"a\n"))
    create(cluster, tmp_path, upstream("v1"))
    create(cluster, tmp_path, copy("ch_d1", "ch_u1"))
    create(cluster, tmp_path, copy("ch_e1", "ch_d1"))
    create(cluster, tmp_path, CROSS)
    ok(pachctl(cluster, "flush-commit", "ch_src/master"))
    check_downstream(cluster, "v1")

    # Without --reprocess the salt stays, so u1's datum is skipped and its
    # v1 output reused (1.7): u1 gets a new output commit all the same, and
    # everything downstream must run on that commit.
    before = inspect_commit(cluster, "ch_u1", "master").commit.id
    create(cluster, tmp_path, upstream("v2"), "--update")
    ok(pachctl(cluster, "flush-commit", "ch_u1/master"))
    assert inspect_commit(cluster, "ch_u1", "master").commit.id != before
    check_downstream(cluster, "v1")

    # --reprocess: a new salt, u1 runs the v3 code, d1/e1/x see v3.
    before = inspect_commit(cluster, "ch_u1", "master").commit.id
    create(cluster, tmp_path, upstream("v3"), "--update", "--reprocess")
    ok(pachctl(cluster, "flush-commit", "ch_u1/master"))
    assert inspect_commit(cluster, "ch_u1", "master").commit.id != before
    check_downstream(cluster, "v3")

    # A later input commit still flows through the whole chain.
    ok(pachctl(cluster, "put-file", "ch_src", "master", "/b", "-f", "-", stdin=b"b\n"))
    ok(pachctl(cluster, "flush-commit", "ch_src/master"))
    check_downstream(cluster, "v3")
    assert ok(pachctl(cluster, "get-file", "ch_e1", "master", "/b")) == b"b\n"
