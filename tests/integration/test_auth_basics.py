"""Enterprise activation and auth over gRPC on a real cluster: a code
signed by the trusted key activates, a foreign, bad or expired one is
refused; auth activates with an initial admin; tokens, admins and repo
ACLs decide every call, and a revocation holds on the very next call."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from libs.api.auth import auth_pb2 as auth
from libs.api.enterprise import enterprise_pb2 as ent
from libs.api.pfs import pfs_pb2 as pfs
from tests.integration.auth_support import Client, code, write_keys
from tests.support.cluster import Cluster, running

OK = grpc.StatusCode.OK
DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAUTH = grpc.StatusCode.UNAUTHENTICATED


def http(url: str, body: bytes | None, token: str = "") -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if body is not None:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_keys(Path(tmp_path_factory.mktemp("keys")))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, keys: tuple[Path, Path]) -> Iterator[Cluster]:
    base = Path(tmp_path_factory.mktemp("auth"))
    yield from running(base / "data", PACH_ENTERPRISE_PUBLIC_KEY=str(keys[1]))


def test_enterprise_and_auth_flow(
    cluster: Cluster, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    anon = Client(cluster.grpc_port)
    state = anon.call(anon.enterprise.GetState, ent.GetStateRequest())
    assert state.state == ent.NONE
    # auth needs enterprise
    with pytest.raises(grpc.RpcError) as err:
        anon.call(anon.auth.Activate, auth.ActivateRequest(subject="robot:admin"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # a foreign code is refused and changes nothing
    foreign, _ = write_keys(tmp_path)
    with pytest.raises(grpc.RpcError) as err:
        anon.call(anon.enterprise.Activate, ent.ActivateRequest(activation_code=code(foreign)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not signed by the key" in str(err.value.details())
    with pytest.raises(grpc.RpcError) as err:
        anon.call(anon.enterprise.Activate, ent.ActivateRequest(activation_code=code(keys[0], -5)))
    assert "expired" in str(err.value.details())
    assert anon.call(anon.enterprise.GetState, ent.GetStateRequest()).state == ent.NONE

    anon.call(anon.enterprise.Activate, ent.ActivateRequest(activation_code=code(keys[0])))
    assert anon.call(anon.enterprise.GetState, ent.GetStateRequest()).state == ent.ACTIVE

    anon.call(anon.pfs.CreateRepo, pfs.CreateRepoRequest(repo=pfs.Repo(name="before")))
    token = anon.call(anon.auth.Activate, auth.ActivateRequest(subject="robot:admin")).pach_token
    admin = Client(cluster.grpc_port, token)
    who = admin.call(admin.auth.WhoAmI, auth.WhoAmIRequest())
    assert (who.username, who.is_admin) == ("robot:admin", True)

    assert anon.code_of(anon.pfs.ListRepo, pfs.ListRepoRequest()) == UNAUTH
    bogus = Client(cluster.grpc_port, "0" * 64)
    assert bogus.code_of(bogus.pfs.ListRepo, pfs.ListRepoRequest()) == UNAUTH

    alice_token = admin.call(
        admin.auth.GetAuthToken, auth.GetAuthTokenRequest(subject="robot:alice")
    ).token
    alice = Client(cluster.grpc_port, alice_token)
    assert alice.call(alice.auth.WhoAmI, auth.WhoAmIRequest()).username == "robot:alice"
    # a repo from before activation has no ACL: admins only
    before = pfs.InspectRepoRequest(repo=pfs.Repo(name="before"))
    assert alice.code_of(alice.pfs.InspectRepo, before) == DENIED
    assert admin.code_of(admin.pfs.InspectRepo, before) == OK
    # the creator of a repo owns it
    alice.call(alice.pfs.CreateRepo, pfs.CreateRepoRequest(repo=pfs.Repo(name="mine")))
    acl = alice.call(alice.auth.GetACL, auth.GetACLRequest(repo="mine"))
    assert [(e.username, e.scope) for e in acl.robot_entries] == [("robot:alice", auth.OWNER)]

    bob_token = admin.call(
        admin.auth.GetAuthToken, auth.GetAuthTokenRequest(subject="robot:bob")
    ).token
    bob = Client(cluster.grpc_port, bob_token)
    mine = pfs.InspectRepoRequest(repo=pfs.Repo(name="mine"))
    with pytest.raises(grpc.RpcError) as err:
        bob.call(bob.pfs.InspectRepo, mine)
    assert err.value.code() == DENIED
    assert "robot:bob" in str(err.value.details()) and "READER" in str(err.value.details())
    assert "mine" in str(err.value.details())
    # HTTP: 401 without a token, 403 naming the subject, scope and repo
    url = f"http://127.0.0.1:{cluster.http_port}/api/pfs/InspectRepo"
    body = json.dumps({"repo": {"name": "mine"}}).encode()
    assert http(url, body)[0] == 401
    status, answer = http(url, body, bob_token)
    assert status == 403, answer
    assert "robot:bob" in answer and "READER" in answer and "mine" in answer
    assert http(url, body, alice_token)[0] == 200
    download = f"http://127.0.0.1:{cluster.http_port}/pfs/mine/master/x"
    assert http(download, None, bob_token)[0] == 403
    alice.call(
        alice.auth.SetScope,
        auth.SetScopeRequest(username="robot:bob", repo="mine", scope=auth.READER),
    )
    assert bob.code_of(bob.pfs.InspectRepo, mine) == OK
    # ACL change: next call
    alice.call(
        alice.auth.SetScope,
        auth.SetScopeRequest(username="robot:bob", repo="mine", scope=auth.NONE),
    )
    assert bob.code_of(bob.pfs.InspectRepo, mine) == DENIED
    # revocation: next call
    admin.call(admin.auth.RevokeAuthToken, auth.RevokeAuthTokenRequest(token=bob_token))
    assert bob.code_of(bob.pfs.ListRepo, pfs.ListRepoRequest()) == UNAUTH
    # a removed admin: next call
    admin.call(admin.auth.ModifyAdmins, auth.ModifyAdminsRequest(add=["robot:alice"]))
    assert alice.code_of(alice.pfs.InspectRepo, before) == OK
    admin.call(admin.auth.ModifyAdmins, auth.ModifyAdminsRequest(remove=["robot:alice"]))
    assert alice.code_of(alice.pfs.InspectRepo, before) == DENIED
    # deactivation (admins only) drops every ACL and token: open access again
    assert alice.code_of(alice.auth.Deactivate, auth.DeactivateRequest()) == DENIED
    admin.call(admin.auth.Deactivate, auth.DeactivateRequest())
    assert anon.code_of(anon.pfs.InspectRepo, before) == OK
    assert anon.code_of(anon.pfs.InspectRepo, mine) == OK
    with pytest.raises(grpc.RpcError) as err:
        admin.call(admin.auth.WhoAmI, auth.WhoAmIRequest())
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # activating again starts afresh: old tokens stay dead
    again = anon.call(anon.auth.Activate, auth.ActivateRequest(subject="robot:admin2"))
    assert (
        Client(cluster.grpc_port, again.pach_token).code_of(
            anon.pfs.ListRepo, pfs.ListRepoRequest()
        )
        == OK
    )
    assert admin.code_of(admin.pfs.ListRepo, pfs.ListRepoRequest()) == UNAUTH
    assert anon.code_of(anon.pfs.InspectRepo, mine) == UNAUTH
