"""A pipeline runs with a capability of its own: its jobs read its inputs
as its creator. The creator losing READER on an input fails the next job
with that reason; gaining it back lets the next one run."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from libs.api.auth import auth_pb2 as auth
from libs.api.enterprise import enterprise_pb2 as ent
from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pps import pps_pb2 as pps
from tests.integration.auth_support import Client, code, write_keys
from tests.support.cluster import Cluster, running

FINISHED = {pps.JOB_SUCCESS, pps.JOB_FAILURE, pps.JOB_KILLED}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_keys(Path(tmp_path_factory.mktemp("pipe-keys")))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, keys: tuple[Path, Path]) -> Iterator[Cluster]:
    base = Path(tmp_path_factory.mktemp("pipe-auth"))
    yield from running(base / "data", PACH_ENTERPRISE_PUBLIC_KEY=str(keys[1]))


def put(c: Client, path: str) -> None:
    commit = pfs.Commit(repo=pfs.Repo(name="src"), id="master")
    req = pfs.PutFileRequest(file=pfs.File(commit=commit, path=path), value=b"x\n")
    c.call(c.pfs.PutFile, iter([req]))


def jobs(c: Client, count: int) -> list[pps.JobInfo]:
    """The pipeline's jobs, oldest first, once ``count`` are finished."""
    deadline = time.monotonic() + 90
    while True:
        infos = c.call(c.pps.ListJob, pps.ListJobRequest(pipeline=pps.Pipeline(name="cap")))
        done = [j for j in infos.job_info if j.state in FINISHED]
        if len(done) >= count:
            return sorted(done, key=lambda j: j.started.ToNanoseconds())
        assert time.monotonic() < deadline, [(j.job.id, j.state) for j in infos.job_info]
        time.sleep(0.3)


def test_creator_losing_reader_fails_the_next_job(
    cluster: Cluster, keys: tuple[Path, Path]
) -> None:
    anon = Client(cluster.grpc_port)
    anon.call(anon.enterprise.Activate, ent.ActivateRequest(activation_code=code(keys[0])))
    token = anon.call(anon.auth.Activate, auth.ActivateRequest(subject="robot:admin")).pach_token
    admin = Client(cluster.grpc_port, token)
    alice_token = admin.call(
        admin.auth.GetAuthToken, auth.GetAuthTokenRequest(subject="robot:alice")
    ).token
    alice = Client(cluster.grpc_port, alice_token)
    admin.call(admin.pfs.CreateRepo, pfs.CreateRepoRequest(repo=pfs.Repo(name="src")))
    spec = pps.CreatePipelineRequest(
        pipeline=pps.Pipeline(name="cap"),
        transform=pps.Transform(cmd=["sh"], stdin=["cp /pfs/src/* /pfs/out/"]),
        input=pps.Input(atom=pps.AtomInput(repo="src", glob="/*")),
    )
    # creating a pipeline needs READER on its inputs
    assert alice.code_of(alice.pps.CreatePipeline, spec).name == "PERMISSION_DENIED"
    grant = auth.SetScopeRequest(username="robot:alice", repo="src", scope=auth.READER)
    admin.call(admin.auth.SetScope, grant)
    alice.call(alice.pps.CreatePipeline, spec)
    # ... and makes the creator OWNER of the output repo
    acl = alice.call(alice.auth.GetACL, auth.GetACLRequest(repo="cap"))
    assert [(e.username, e.scope) for e in acl.robot_entries] == [("robot:alice", auth.OWNER)]

    put(admin, "/one")
    first = jobs(admin, 1)[-1]
    assert first.state == pps.JOB_SUCCESS, first.reason

    revoke = auth.SetScopeRequest(username="robot:alice", repo="src", scope=auth.NONE)
    admin.call(admin.auth.SetScope, revoke)
    put(admin, "/two")
    second = jobs(admin, 2)[-1]
    assert second.state == pps.JOB_FAILURE
    assert "robot:alice" in second.reason and "src" in second.reason, second.reason
    assert "READER" in second.reason

    admin.call(admin.auth.SetScope, grant)
    put(admin, "/three")
    third = jobs(admin, 3)[-1]
    assert third.state == pps.JOB_SUCCESS, third.reason
