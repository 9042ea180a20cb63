"""Every public RPC of pfs.API, pps.API, admin.API, auth.API and
enterprise.API, generated from their service descriptors, against every
role: anonymous, a subject with no access, READER, WRITER and OWNER of the
repos involved, an admin, a robot user (granted WRITER) and a non-admin
while the enterprise activation is expired ("admin only"). ``LEVELS``
says what each RPC needs; an RPC without an entry fails the test.

A call is *allowed* when it does not end in UNAUTHENTICATED or
PERMISSION_DENIED (it may still fail after authorization: the requests
name things that exist where a call would otherwise change much, or that
do not exist where it would destroy the fixture). Calls that would destroy
it (DeleteAll, DeletePipeline, Deactivate) run last."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from libs.api.admin import admin_pb2 as adm
from libs.api.auth import auth_pb2 as auth
from libs.api.enterprise import enterprise_pb2 as ent
from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pps import pps_pb2 as pps
from tests.integration.auth_support import Client, code, write_keys
from tests.support.cluster import Cluster, running

REPO = "m"
PIPE = "p"
ROLES = ("anonymous", "nobody", "reader", "writer", "robot", "owner", "admin")
SUBJECTS = {
    "nobody": "github:nobody",
    "reader": "github:reader",
    "writer": "github:writer",
    "robot": "robot:ci",
    "owner": "github:owner",
}
ALLOWED = {
    "public": set(ROLES),
    "any": set(ROLES) - {"anonymous"},
    "reader": {"reader", "writer", "robot", "owner", "admin"},
    "writer": {"writer", "robot", "owner", "admin"},
    "owner": {"owner", "admin"},
    "admin": {"admin"},
    "unserved": set(),
}

LEVELS: dict[str, str] = {
    # pfs.API
    "pfs.API.CreateRepo": "any",
    "pfs.API.InspectRepo": "reader",
    "pfs.API.ListRepo": "any",
    "pfs.API.DeleteRepo": "owner",
    "pfs.API.StartCommit": "writer",
    "pfs.API.FinishCommit": "writer",
    "pfs.API.InspectCommit": "reader",
    "pfs.API.ListCommit": "reader",
    "pfs.API.ListCommitStream": "reader",
    "pfs.API.DeleteCommit": "writer",
    "pfs.API.FlushCommit": "reader",
    "pfs.API.SubscribeCommit": "reader",
    "pfs.API.BuildCommit": "writer",
    "pfs.API.CreateBranch": "writer",
    "pfs.API.InspectBranch": "reader",
    "pfs.API.ListBranch": "reader",
    "pfs.API.DeleteBranch": "writer",
    "pfs.API.PutFile": "writer",
    "pfs.API.CopyFile": "writer",
    "pfs.API.GetFile": "reader",
    "pfs.API.InspectFile": "reader",
    "pfs.API.ListFile": "reader",
    "pfs.API.ListFileStream": "reader",
    "pfs.API.GlobFile": "reader",
    "pfs.API.GlobFileStream": "reader",
    "pfs.API.DiffFile": "reader",
    "pfs.API.DeleteFile": "writer",
    "pfs.API.DeleteAll": "admin",
    # pps.API
    "pps.API.CreateJob": "unserved",
    "pps.API.InspectJob": "any",
    "pps.API.ListJob": "any",
    "pps.API.ListJobStream": "any",
    "pps.API.FlushJob": "reader",
    "pps.API.DeleteJob": "admin",
    "pps.API.StopJob": "admin",
    "pps.API.InspectDatum": "any",
    "pps.API.ListDatum": "any",
    "pps.API.ListDatumStream": "any",
    "pps.API.RestartDatum": "admin",
    "pps.API.CreatePipeline": "writer",
    "pps.API.InspectPipeline": "reader",
    "pps.API.ListPipeline": "any",
    "pps.API.DeletePipeline": "owner",
    "pps.API.StartPipeline": "writer",
    "pps.API.StopPipeline": "writer",
    "pps.API.RerunPipeline": "unserved",
    "pps.API.DeleteAll": "admin",
    "pps.API.GetLogs": "any",
    "pps.API.GarbageCollect": "admin",
    "pps.API.ActivateAuth": "unserved",
    "pps.API.CreateSecret": "admin",
    "pps.API.DeleteSecret": "admin",
    "pps.API.InspectSecret": "admin",
    "pps.API.ListSecret": "admin",
    # admin.API
    "admin.API.Extract": "admin",
    "admin.API.ExtractPipeline": "reader",
    "admin.API.Restore": "admin",
    "admin.API.InspectCluster": "any",
    # auth.API
    "auth.API.Activate": "public",
    "auth.API.Deactivate": "admin",
    "auth.API.GetConfiguration": "admin",
    "auth.API.SetConfiguration": "admin",
    "auth.API.GetAdmins": "any",
    "auth.API.ModifyAdmins": "admin",
    "auth.API.Authenticate": "public",
    "auth.API.Authorize": "any",
    "auth.API.WhoAmI": "any",
    "auth.API.GetScope": "any",
    "auth.API.SetScope": "owner",
    "auth.API.GetACL": "reader",
    "auth.API.SetACL": "owner",
    "auth.API.GetAuthToken": "any",
    "auth.API.ExtendAuthToken": "admin",
    "auth.API.RevokeAuthToken": "any",
    "auth.API.SetGroupsForUser": "admin",
    "auth.API.ModifyMembers": "admin",
    "auth.API.GetGroups": "any",
    "auth.API.GetUsers": "admin",
    "auth.API.GetOneTimePassword": "any",
    "auth.API.GetOIDCLogin": "public",
    # enterprise.API
    "enterprise.API.Activate": "admin",
    "enterprise.API.GetState": "public",
    "enterprise.API.Deactivate": "admin",
}
# Run after everything else, in this order (they take the fixture away).
LAST = (
    "pps.API.DeletePipeline",
    "pfs.API.DeleteRepo",
    "pps.API.DeleteAll",
    "pfs.API.DeleteAll",
    "enterprise.API.Deactivate",
    "auth.API.Deactivate",
)
DESCRIPTORS = [
    d.services_by_name["API"]
    for d in (pfs.DESCRIPTOR, pps.DESCRIPTOR, adm.DESCRIPTOR, auth.DESCRIPTOR, ent.DESCRIPTOR)
]


def commit() -> pfs.Commit:
    return pfs.Commit(repo=pfs.Repo(name=REPO), id="master")


def file(path: str = "/f") -> pfs.File:
    return pfs.File(commit=commit(), path=path)


def requests(acl: list[auth.ACLEntry]) -> dict[str, Message]:
    repo = pfs.Repo(name=REPO)
    branch = pfs.Branch(repo=repo, name="master")
    pipeline = pps.Pipeline(name=PIPE)
    spec = pipeline_spec()
    job = pps.Job(id="no-such-job")
    return {
        "pfs.API.CreateRepo": pfs.CreateRepoRequest(repo=repo),
        "pfs.API.InspectRepo": pfs.InspectRepoRequest(repo=repo),
        "pfs.API.ListRepo": pfs.ListRepoRequest(),
        "pfs.API.DeleteRepo": pfs.DeleteRepoRequest(repo=repo),
        "pfs.API.StartCommit": pfs.StartCommitRequest(parent=pfs.Commit(repo=repo), branch="side"),
        "pfs.API.FinishCommit": pfs.FinishCommitRequest(commit=pfs.Commit(repo=repo, id="side")),
        "pfs.API.InspectCommit": pfs.InspectCommitRequest(commit=commit()),
        "pfs.API.ListCommit": pfs.ListCommitRequest(repo=repo),
        "pfs.API.ListCommitStream": pfs.ListCommitRequest(repo=repo),
        "pfs.API.DeleteCommit": pfs.DeleteCommitRequest(commit=pfs.Commit(repo=repo, id="0" * 32)),
        "pfs.API.FlushCommit": pfs.FlushCommitRequest(commits=[commit()]),
        "pfs.API.SubscribeCommit": pfs.SubscribeCommitRequest(repo=repo, branch="master"),
        "pfs.API.BuildCommit": pfs.BuildCommitRequest(parent=pfs.Commit(repo=repo), branch="x"),
        "pfs.API.CreateBranch": pfs.CreateBranchRequest(
            branch=pfs.Branch(repo=repo, name="b2"), head=commit()
        ),
        "pfs.API.InspectBranch": pfs.InspectBranchRequest(branch=branch),
        "pfs.API.ListBranch": pfs.ListBranchRequest(repo=repo),
        "pfs.API.DeleteBranch": pfs.DeleteBranchRequest(branch=pfs.Branch(repo=repo, name="no")),
        "pfs.API.PutFile": pfs.PutFileRequest(file=file("/w"), value=b"w"),
        "pfs.API.CopyFile": pfs.CopyFileRequest(src=file(), dst=file("/copy"), overwrite=True),
        "pfs.API.GetFile": pfs.GetFileRequest(file=file()),
        "pfs.API.InspectFile": pfs.InspectFileRequest(file=file()),
        "pfs.API.ListFile": pfs.ListFileRequest(file=file("/")),
        "pfs.API.ListFileStream": pfs.ListFileRequest(file=file("/")),
        "pfs.API.GlobFile": pfs.GlobFileRequest(commit=commit(), pattern="/*"),
        "pfs.API.GlobFileStream": pfs.GlobFileRequest(commit=commit(), pattern="/*"),
        "pfs.API.DiffFile": pfs.DiffFileRequest(new_file=file("/")),
        "pfs.API.DeleteFile": pfs.DeleteFileRequest(file=file("/nothing-here")),
        "pfs.API.DeleteAll": Empty(),
        "pps.API.CreateJob": pps.CreateJobRequest(),
        "pps.API.InspectJob": pps.InspectJobRequest(job=job),
        "pps.API.ListJob": pps.ListJobRequest(pipeline=pipeline),
        "pps.API.ListJobStream": pps.ListJobRequest(pipeline=pipeline),
        "pps.API.FlushJob": pps.FlushJobRequest(commits=[commit()]),
        "pps.API.DeleteJob": pps.DeleteJobRequest(job=job),
        "pps.API.StopJob": pps.StopJobRequest(job=job),
        "pps.API.InspectDatum": pps.InspectDatumRequest(datum=pps.Datum(job=job, id="d")),
        "pps.API.ListDatum": pps.ListDatumRequest(job=job),
        "pps.API.ListDatumStream": pps.ListDatumRequest(job=job),
        "pps.API.RestartDatum": pps.RestartDatumRequest(job=job),
        "pps.API.CreatePipeline": spec,  # exists: ALREADY_EXISTS once authorized
        "pps.API.InspectPipeline": pps.InspectPipelineRequest(pipeline=pipeline),
        "pps.API.ListPipeline": pps.ListPipelineRequest(),
        "pps.API.DeletePipeline": pps.DeletePipelineRequest(pipeline=pipeline),
        "pps.API.StartPipeline": pps.StartPipelineRequest(pipeline=pipeline),
        "pps.API.StopPipeline": pps.StopPipelineRequest(pipeline=pipeline),
        "pps.API.RerunPipeline": pps.RerunPipelineRequest(pipeline=pipeline),
        "pps.API.DeleteAll": Empty(),
        "pps.API.GetLogs": pps.GetLogsRequest(pipeline=pipeline),
        "pps.API.GarbageCollect": pps.GarbageCollectRequest(),
        "pps.API.ActivateAuth": pps.ActivateAuthRequest(),
        "admin.API.Extract": adm.ExtractRequest(no_objects=True),
        "admin.API.ExtractPipeline": adm.ExtractPipelineRequest(pipeline=pipeline),
        "admin.API.Restore": adm.RestoreRequest(),
        "admin.API.InspectCluster": Empty(),
        "auth.API.Activate": auth.ActivateRequest(subject="robot:admin"),
        "auth.API.Deactivate": auth.DeactivateRequest(),
        "auth.API.GetConfiguration": auth.GetConfigurationRequest(),
        "auth.API.SetConfiguration": auth.SetConfigurationRequest(),
        "auth.API.GetAdmins": auth.GetAdminsRequest(),
        "auth.API.ModifyAdmins": auth.ModifyAdminsRequest(),
        "auth.API.Authenticate": auth.AuthenticateRequest(one_time_password="0" * 64),
        "auth.API.Authorize": auth.AuthorizeRequest(repo=REPO, scope=auth.READER),
        "auth.API.WhoAmI": auth.WhoAmIRequest(),
        "auth.API.GetScope": auth.GetScopeRequest(repos=[REPO]),
        "auth.API.SetScope": auth.SetScopeRequest(
            username="github:zed", repo=REPO, scope=auth.NONE
        ),
        "auth.API.GetACL": auth.GetACLRequest(repo=REPO),
        "auth.API.SetACL": auth.SetACLRequest(repo=REPO, entries=acl),
        "auth.API.GetAuthToken": auth.GetAuthTokenRequest(ttl=60),
        "auth.API.ExtendAuthToken": auth.ExtendAuthTokenRequest(token="0" * 64, ttl=60),
        "auth.API.RevokeAuthToken": auth.RevokeAuthTokenRequest(token="0" * 64),
        "auth.API.SetGroupsForUser": auth.SetGroupsForUserRequest(username="github:zed"),
        "auth.API.ModifyMembers": auth.ModifyMembersRequest(group="g", add=["github:zed"]),
        "auth.API.GetGroups": auth.GetGroupsRequest(),
        "auth.API.GetUsers": auth.GetUsersRequest(group="g"),
        "auth.API.GetOneTimePassword": auth.GetOneTimePasswordRequest(),
        "auth.API.GetOIDCLogin": auth.GetOIDCLoginRequest(),
        "enterprise.API.Activate": ent.ActivateRequest(activation_code="pach1.x.y"),
        "enterprise.API.GetState": ent.GetStateRequest(),
        "enterprise.API.Deactivate": ent.DeactivateRequest(),
    }


def pipeline_spec() -> pps.CreatePipelineRequest:
    return pps.CreatePipelineRequest(
        pipeline=pps.Pipeline(name=PIPE),
        transform=pps.Transform(cmd=["sh"], stdin=["cp -r /pfs/m/* /pfs/out/ || true"]),
        input=pps.Input(atom=pps.AtomInput(repo=REPO, glob="/*")),
    )


def invoke(channel: grpc.Channel, method: Any, request: Message, token: str) -> grpc.StatusCode:
    """Call any method by its descriptor; the status it ends with."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    out = message_factory.GetMessageClass(method.output_type)
    kw: dict[str, Callable[..., Any]] = {
        "request_serializer": lambda m: m.SerializeToString(),
        "response_deserializer": out.FromString,
    }
    metadata: tuple[tuple[str, str | bytes], ...] = (("authn-token", token),) if token else ()
    timeout = 4.0
    try:
        if method.client_streaming and method.server_streaming:
            raise AssertionError(f"{path}: bidirectional streams are not expected")
        if method.client_streaming:
            channel.stream_unary(path, **kw)(iter([request]), metadata=metadata, timeout=timeout)
        elif method.server_streaming:
            for _ in channel.unary_stream(path, **kw)(request, metadata=metadata, timeout=timeout):
                break  # the first reply shows it was authorized
        else:
            channel.unary_unary(path, **kw)(request, metadata=metadata, timeout=timeout)
    except grpc.RpcError as err:
        return err.code()  # type: ignore[attr-defined,no-any-return]
    return grpc.StatusCode.OK


REFUSED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_keys(Path(tmp_path_factory.mktemp("matrix-keys")))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, keys: tuple[Path, Path]) -> Iterator[Cluster]:
    base = Path(tmp_path_factory.mktemp("matrix"))
    yield from running(base / "data", PACH_ENTERPRISE_PUBLIC_KEY=str(keys[1]))


def test_every_rpc_has_a_rule() -> None:
    rpcs = {f"{s.full_name}.{m.name}" for s in DESCRIPTORS for m in s.methods}
    assert not rpcs - set(LEVELS), f"RPCs without a rule: {sorted(rpcs - set(LEVELS))}"


def test_rpc_by_role_matrix(cluster: Cluster, keys: tuple[Path, Path]) -> None:
    anon = Client(cluster.grpc_port)
    anon.call(anon.enterprise.Activate, ent.ActivateRequest(activation_code=code(keys[0])))
    admin_token = anon.call(anon.auth.Activate, auth.ActivateRequest(subject="robot:admin"))
    tokens = {"anonymous": "", "admin": admin_token.pach_token}
    admin = Client(cluster.grpc_port, tokens["admin"])
    for role, subject in SUBJECTS.items():
        req = auth.GetAuthTokenRequest(subject=subject)
        tokens[role] = admin.call(admin.auth.GetAuthToken, req).token
    owner = Client(cluster.grpc_port, tokens["owner"])
    owner.call(owner.pfs.CreateRepo, pfs.CreateRepoRequest(repo=pfs.Repo(name=REPO)))
    owner.call(owner.pfs.PutFile, iter([pfs.PutFileRequest(file=file(), value=b"x\n")]))
    owner.call(owner.pps.CreatePipeline, pipeline_spec())
    acl = [
        auth.ACLEntry(username=SUBJECTS["owner"], scope=auth.OWNER),
        auth.ACLEntry(username=SUBJECTS["reader"], scope=auth.READER),
        auth.ACLEntry(username=SUBJECTS["writer"], scope=auth.WRITER),
        auth.ACLEntry(username=SUBJECTS["robot"], scope=auth.WRITER),
    ]
    for repo in (REPO, PIPE):
        owner.call(owner.auth.SetACL, auth.SetACLRequest(repo=repo, entries=acl))

    methods = {f"{s.full_name}.{m.name}": m for s in DESCRIPTORS for m in s.methods}
    # An RPC no request is written for gets an empty one.
    reqs = {
        name: message_factory.GetMessageClass(m.input_type)() for name, m in methods.items()
    } | requests(acl)
    order = [n for n in methods if n not in LAST]
    wrong: list[str] = []

    def run(name: str, role: str, allowed: bool) -> None:
        got = invoke(owner.channel, methods[name], reqs[name], tokens[role])
        level = LEVELS[name]
        if level == "unserved":
            if got != grpc.StatusCode.UNIMPLEMENTED:
                wrong.append(f"{name} as {role}: {got.name}, expected UNIMPLEMENTED")
        elif allowed and got in REFUSED:
            wrong.append(f"{name} as {role}: {got.name}, expected it allowed ({level})")
        elif not allowed:
            expected = (
                grpc.StatusCode.UNAUTHENTICATED
                if role == "anonymous"
                else grpc.StatusCode.PERMISSION_DENIED
            )
            if got != expected:
                wrong.append(f"{name} as {role}: {got.name}, expected {expected.name} ({level})")

    for role in ROLES:
        for name in order:
            run(name, role, role in ALLOWED[LEVELS[name]])

    # "admin only": the enterprise activation expires; only admins may act
    soon = Timestamp(seconds=int(time.time()) + 2)
    admin.call(
        admin.enterprise.Activate, ent.ActivateRequest(activation_code=code(keys[0]), expires=soon)
    )
    while admin.call(admin.enterprise.GetState, ent.GetStateRequest()).state != ent.EXPIRED:
        time.sleep(0.2)
    for name in order:
        run(name, "owner", LEVELS[name] == "public")  # the owner, now refused
    for name in ("pfs.API.InspectRepo", "auth.API.GetAdmins"):
        run(name, "admin", True)
    # a new code restores the previous state
    admin.call(admin.enterprise.Activate, ent.ActivateRequest(activation_code=code(keys[0])))
    for name in ("pfs.API.InspectRepo", "pfs.API.GetFile", "auth.API.SetACL"):
        run(name, "owner", True)

    for name in LAST:
        for role in ROLES:
            run(name, role, role in ALLOWED[LEVELS[name]])
    assert not wrong, "\n".join(wrong)
