"""pachctl's auth and enterprise commands on a real cluster: mint a code,
activate enterprise and auth, log in as robots (tokens and one-time
passwords), set and read ACLs, modify admins, revoke; one-line errors;
the data dir holds no token in clear; auth and enterprise state survive a
restart and an extract/restore."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.auth_support import write_keys
from tests.support.cluster import ROOT, Cluster, running


def pc(
    c: Cluster, config: Path, *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    env = {
        **os.environ,
        "PACHD_ADDRESS": f"127.0.0.1:{c.grpc_port}",
        "PYTHONPATH": str(ROOT),
        "PACH_CONFIG": str(config),
    }
    return subprocess.run(
        [sys.executable, "-m", "programs.pachctl", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        timeout=120,
    )


def ok(done: subprocess.CompletedProcess[bytes]) -> str:
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def fails(done: subprocess.CompletedProcess[bytes]) -> str:
    assert done.returncode == 1, (done.stdout, done.stderr)
    err = done.stderr.decode()
    assert err.count("\n") == 1, err  # one line
    return err


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(tmp_path_factory.mktemp("authctl"))


@pytest.fixture(scope="module")
def keys(base: Path) -> tuple[Path, Path]:
    return write_keys(base)


@pytest.fixture(scope="module")
def cluster(base: Path, keys: tuple[Path, Path]) -> Iterator[Cluster]:
    yield from running(base / "data", PACH_ENTERPRISE_PUBLIC_KEY=str(keys[1]))


def test_auth_through_pachctl(cluster: Cluster, keys: tuple[Path, Path], base: Path) -> None:
    admin = base / "admin.json"
    alice = base / "alice.json"
    anon = base / "anon.json"
    # mint-code is hidden from help
    assert "mint-code" not in ok(pc(cluster, anon, "enterprise", "-h"))
    code = ok(pc(cluster, anon, "enterprise", "mint-code", "--signing-key", str(keys[0]))).strip()
    assert "No Pachyderm Enterprise token" in ok(pc(cluster, anon, "enterprise", "get-state"))
    err = fails(pc(cluster, anon, "enterprise", "activate", code[:-4] + "AAAA"))
    assert "not signed" in err or "malformed" in err
    err = fails(pc(cluster, admin, "auth", "activate", "--initial-admin=robot:admin"))
    assert "enterprise" in err
    ok(pc(cluster, anon, "enterprise", "activate", code, "--expires", "30d"))
    state = ok(pc(cluster, anon, "enterprise", "get-state"))
    assert "ACTIVE" in state and "Expiration" in state

    ok(pc(cluster, anon, "create-repo", "early"))  # before auth: no ACL, admins only
    ok(pc(cluster, admin, "auth", "activate", "--initial-admin=robot:admin"))
    who = ok(pc(cluster, admin, "auth", "whoami"))
    assert 'You are "robot:admin"' in who and "administrator" in who
    assert "not logged in" in fails(pc(cluster, anon, "list-repo"))

    out = ok(pc(cluster, admin, "auth", "get-auth-token", "robot:alice", "--ttl", "1h"))
    assert out.startswith("New credentials:\n  Subject: robot:alice\n  Token: ")
    alice_token = out.rsplit("Token: ", 1)[1].strip()
    assert len(alice_token) >= 32
    ok(pc(cluster, alice, "auth", "use-auth-token", stdin=alice_token.encode() + b"\n"))
    assert 'You are "robot:alice"' in ok(pc(cluster, alice, "auth", "whoami"))
    assert alice_token in (alice.read_text())
    assert oct(alice.stat().st_mode & 0o777) == "0o600"

    err = fails(pc(cluster, alice, "inspect-repo", "early"))
    assert "robot:alice" in err and "READER" in err and "early" in err
    ok(pc(cluster, alice, "create-repo", "data"))
    ok(pc(cluster, alice, "put-file", "data", "master", "/a", "-f", "-", stdin=b"a\n"))
    assert ok(pc(cluster, alice, "auth", "get", "data")) == "robot:alice: OWNER\n"

    # bob logs in with a one-time password an admin got for him
    bob = base / "bob.json"
    otp = ok(pc(cluster, admin, "auth", "get-otp", "robot:bob")).strip()
    ok(pc(cluster, bob, "auth", "login", "--one-time-password", stdin=otp.encode() + b"\n"))
    assert 'You are "robot:bob"' in ok(pc(cluster, bob, "auth", "whoami"))
    # a one-time password works once
    other = base / "other.json"
    fails(pc(cluster, other, "auth", "login", "--one-time-password", stdin=otp.encode() + b"\n"))
    # no OIDC provider configured: a browser login says exactly that
    assert "OIDC is not configured" in fails(pc(cluster, other, "auth", "login"))

    assert "READER" in fails(pc(cluster, bob, "get-file", "data", "master", "/a"))
    assert "OWNER" in fails(pc(cluster, bob, "auth", "set", "robot:bob", "owner", "data"))
    ok(pc(cluster, alice, "auth", "set", "robot:bob", "reader", "data"))
    assert ok(pc(cluster, bob, "auth", "get", "robot:bob", "data")) == "READER\n"
    assert ok(pc(cluster, bob, "get-file", "data", "master", "/a")) == "a\n"
    assert "WRITER" in fails(
        pc(cluster, bob, "put-file", "data", "master", "/b", "-f", "-", stdin=b"b")
    )

    # admins
    assert ok(pc(cluster, alice, "auth", "list-admins")) == "robot:admin\n"
    assert "admin-only" in fails(
        pc(cluster, alice, "auth", "modify-admins", "--add", "robot:alice")
    )
    ok(pc(cluster, admin, "auth", "modify-admins", "--add", "robot:alice"))
    assert ok(pc(cluster, alice, "inspect-repo", "early"))
    ok(pc(cluster, admin, "auth", "modify-admins", "--remove", "robot:alice"))
    assert "READER" in fails(pc(cluster, alice, "inspect-repo", "early"))

    # revocation holds on the next call; logout forgets the token
    ok(pc(cluster, admin, "auth", "revoke", stdin=alice_token.encode() + b"\n"))
    assert "not logged in" in fails(pc(cluster, alice, "list-repo"))
    ok(pc(cluster, bob, "auth", "logout"))
    assert "not logged in" in fails(pc(cluster, bob, "list-repo"))

    # no token in clear anywhere in the data dir
    admin_token = (admin.read_text()).split('"session_token": "')[1].split('"')[0]
    for secret in (admin_token, alice_token, otp):
        found = subprocess.run(
            ["grep", "-r", "-l", "-a", secret, str(cluster.data_dir)], capture_output=True
        )
        assert found.returncode == 1, found.stdout


def test_state_survives_restart_and_extract_restore(
    cluster: Cluster, keys: tuple[Path, Path], base: Path
) -> None:
    admin = base / "admin.json"
    alice = base / "alice2.json"
    out = ok(pc(cluster, admin, "auth", "get-auth-token", "robot:carol", "-q"))
    ok(pc(cluster, alice, "auth", "use-auth-token", stdin=out.encode()))
    ok(pc(cluster, alice, "create-repo", "carols"))
    backup = subprocess.run(
        [sys.executable, "-m", "programs.pachctl", "extract"],
        cwd=ROOT,
        env={
            **os.environ,
            "PACHD_ADDRESS": f"127.0.0.1:{cluster.grpc_port}",
            "PACH_CONFIG": str(admin),
        },
        capture_output=True,
        timeout=120,
    )
    assert backup.returncode == 0, backup.stderr.decode()
    # non-admins may not extract
    assert "admin-only" in fails(pc(cluster, alice, "extract"))

    def check(c: Cluster) -> None:
        assert "ACTIVE" in ok(pc(c, admin, "enterprise", "get-state"))
        assert 'You are "robot:admin"' in ok(pc(c, admin, "auth", "whoami"))
        assert ok(pc(c, alice, "auth", "get", "carols")) == "robot:carol: OWNER\n"
        assert "READER" in fails(pc(c, alice, "inspect-repo", "data"))

    assert cluster.stop() == 0
    cluster.start().wait_ready()
    check(cluster)

    with_keys = {"PACH_ENTERPRISE_PUBLIC_KEY": str(keys[1])}
    for target in running(base / "restored", **with_keys):
        anon = base / "anon-target.json"
        restored = subprocess.run(
            [sys.executable, "-m", "programs.pachctl", "restore"],
            cwd=ROOT,
            env={
                **os.environ,
                "PACHD_ADDRESS": f"127.0.0.1:{target.grpc_port}",
                "PACH_CONFIG": str(anon),
            },
            input=backup.stdout,
            capture_output=True,
            timeout=120,
        )
        assert restored.returncode == 0, restored.stderr.decode()
        check(target)
