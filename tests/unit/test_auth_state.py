"""The auth state every service decides from: tokens by hash, admins,
ACLs from repo creation and SetScope, groups, deactivation, the enterprise
expiry's admin-only state, and a pipeline creator's READER on inputs."""

from __future__ import annotations

import pytest

from libs.api.events import auth_pb2 as aev
from libs.api.events import enterprise_pb2 as eev
from libs.api.events import pfs_pb2 as pev
from libs.api.events import pps_pb2 as ppsev
from libs.authz.state import (
    ANYONE,
    OWNER,
    PUBLIC,
    READER,
    WRITER,
    AuthState,
    Need,
    admin,
    on_repos,
    token_hash,
)
from libs.errors import PermissionDenied, Unauthenticated

NOW = 1_000_000.0


def active() -> AuthState:
    s = AuthState()
    s.apply(
        "enterprise.ActivationCodeAccepted",
        "cluster",
        "",
        eev.ActivationCodeAccepted(expires_unix=int(NOW) + 100),
    )
    s.apply("auth.AuthActivated", "auth", "", aev.AuthActivated(admin="robot:admin"))
    return s


def issue(s: AuthState, token: str, subject: str, **kw: object) -> None:
    event = aev.TokenIssued(subject=subject, generation=s.generation, **kw)  # type: ignore[arg-type]
    s.apply("auth.TokenIssued", token_hash(token), "", event)


def test_tokens_are_looked_up_by_hash_and_end_when_revoked_expired_or_deactivated() -> None:
    s = active()
    issue(s, "t1", "robot:a")
    issue(s, "t2", "robot:b", expires_unix=int(NOW) - 1)
    issue(s, "otp", "robot:c", one_time=True)
    assert s.subject_for("t1", NOW) == "robot:a"
    assert "t1" not in str(s.tokens)  # only hashes are kept
    for bad in ("t2", "otp", "nope"):
        with pytest.raises(Unauthenticated):
            s.subject_for(bad, NOW)
    with pytest.raises(Unauthenticated, match="not logged in"):
        s.subject_for("", NOW)
    s.apply("auth.TokenRevoked", token_hash("t1"), "", aev.TokenRevoked())
    with pytest.raises(Unauthenticated):
        s.subject_for("t1", NOW)
    issue(s, "t3", "robot:a")
    s.apply("auth.AuthDeactivated", "auth", "", aev.AuthDeactivated())
    s.apply("auth.AuthActivated", "auth", "", aev.AuthActivated(admin="robot:admin"))
    with pytest.raises(Unauthenticated):  # a token of an earlier activation
        s.subject_for("t3", NOW)


def test_repo_creators_own_their_repos_and_scopes_order() -> None:
    s = active()
    s.apply("pfs.RepoCreated", "r", "robot:owner", pev.RepoCreated(name="r"))
    s.apply("auth.ScopeSet", "r", "", aev.ScopeSet(subject="robot:w", scope=WRITER))
    s.apply("auth.GroupMembersModified", "readers", "", aev.GroupMembersModified(add=["robot:g"]))
    s.apply("auth.ScopeSet", "r", "", aev.ScopeSet(subject="group/readers", scope=READER))
    assert s.scope("robot:owner", "r") == OWNER
    assert s.scope("robot:w", "r") == WRITER
    assert s.scope("robot:g", "r") == READER
    assert s.scope("robot:admin", "r") == OWNER
    s.check("robot:w", on_repos(WRITER, "r"), NOW)
    with pytest.raises(PermissionDenied, match=r"robot:g .* needs WRITER on repo r"):
        s.check("robot:g", on_repos(WRITER, "r"), NOW)
    with pytest.raises(PermissionDenied, match="admin-only"):
        s.check("robot:owner", admin("extract"), NOW)
    with pytest.raises(Unauthenticated):
        s.check("", ANYONE, NOW)
    s.check("", PUBLIC, NOW)
    # a pipeline's existing output repo needs WRITER
    need = Need(writer_if_exists=("r",))
    with pytest.raises(PermissionDenied, match="WRITER"):
        s.check("robot:g", need, NOW)
    s.check("robot:g", Need(writer_if_exists=("new",)), NOW)
    s.apply("pfs.RepoDeleted", "r", "robot:owner", pev.RepoDeleted())
    assert s.scope("robot:owner", "r") == 0


def test_expired_enterprise_means_admins_only_and_a_new_code_restores() -> None:
    s = active()
    s.apply("pfs.RepoCreated", "r", "robot:owner", pev.RepoCreated(name="r"))
    later = NOW + 1000
    assert s.enterprise_state(later) == "EXPIRED"
    with pytest.raises(PermissionDenied, match="admin-only state"):
        s.check("robot:owner", on_repos(READER, "r"), later)
    s.check("robot:admin", admin("x"), later)
    s.apply(
        "enterprise.ActivationCodeAccepted",
        "cluster",
        "",
        eev.ActivationCodeAccepted(expires_unix=int(later) + 100),
    )
    s.check("robot:owner", on_repos(OWNER, "r"), later)


def test_a_pipeline_runs_as_its_creator() -> None:
    s = active()
    s.apply("pfs.RepoCreated", "in", "robot:admin", pev.RepoCreated(name="in"))
    s.apply("pps.PipelineCreated", "p", "robot:alice", ppsev.PipelineCreated())
    assert "robot:alice" in s.pipeline_denial("p", ["in"], NOW)
    s.apply("auth.ScopeSet", "in", "", aev.ScopeSet(subject="robot:alice", scope=READER))
    assert s.pipeline_denial("p", ["in"], NOW) == ""
    assert AuthState().pipeline_denial("p", ["in"], NOW) == ""  # auth off
