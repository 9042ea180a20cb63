"""The PFS issue's commit, branch and repo rules, each through pachctl against
a real cluster: what a user types, the one-line error they get, and that a
refused command changed nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.integration.test_pfs_repos import pachctl
from tests.support.cluster import ROOT, Cluster, running, wait_until


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from running(tmp_path_factory.mktemp("pachctl-rules") / "data")


@pytest.fixture(autouse=True)
def empty(cluster: Cluster) -> None:
    ok(cluster, "delete-repo", "--all", "--force")


def ok(cluster: Cluster, *args: str) -> str:
    done = pachctl(cluster, *args)
    assert done.returncode == 0, f"pachctl {' '.join(args)}: {done.stderr}"
    return done.stdout


def refused(cluster: Cluster, *args: str) -> str:
    """The one-line error of a command that must fail."""
    done = pachctl(cluster, *args)
    assert done.returncode == 1, f"pachctl {' '.join(args)} succeeded: {done.stdout}"
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def commit(cluster: Cluster, repo: str, branch: str = "master", *files: str) -> str:
    """A finished commit on ``branch`` holding ``files`` (name = content)."""
    cid = ok(cluster, "start-commit", repo, branch).strip()
    for name in files:
        done = subprocess.run(
            [sys.executable, "-m", "programs.pachctl", "put-file", repo, cid, name],
            cwd=ROOT,
            env={**os.environ, "PACHD_ADDRESS": f"127.0.0.1:{cluster.grpc_port}"},
            input=name.encode(),
            capture_output=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
    ok(cluster, "finish-commit", repo, cid)
    return cid


def commit_ids(cluster: Cluster, repo: str, ref: str = "") -> list[str]:
    listing = ok(cluster, "list-commit", repo, *([ref] if ref else [])).splitlines()
    return [line.split()[1] for line in listing[1:]]


def parent_of(cluster: Cluster, repo: str, ref: str) -> str:
    detail = ok(cluster, "inspect-commit", repo, ref)
    found = re.search(r"^Parent: (\S+)$", detail, re.M)
    return found.group(1) if found else ""


def head(cluster: Cluster, repo: str, branch: str) -> str:
    for line in ok(cluster, "list-branch", repo).splitlines()[1:]:
        name, value = line.split()
        if name == branch:
            return value
    raise AssertionError(f"no branch {branch} in {repo}")


def test_repo_names_and_provenance_protect_deletion(cluster: Cluster) -> None:
    for bad in ("has space", "dot.ted", "slash/ed", "ünï"):
        line = refused(cluster, "create-repo", bad)
        assert bad in line or "name" in line
    assert ok(cluster, "list-repo").splitlines()[1:] == []
    ok(cluster, "create-repo", "in_put-1", "-d", "raw data")
    assert "raw data" in ok(cluster, "inspect-repo", "in_put-1")
    assert "already exists" in refused(cluster, "create-repo", "in_put-1")
    ok(cluster, "create-repo", "out")
    commit(cluster, "in_put-1", "master", "f")
    ok(cluster, "create-branch", "out", "master", "-p", "in_put-1/master")
    line = refused(cluster, "delete-repo", "in_put-1")
    assert "out" in line
    assert [ln.split()[0] for ln in ok(cluster, "list-repo").splitlines()[1:]] == [
        "out",
        "in_put-1",
    ]
    ok(cluster, "delete-repo", "in_put-1", "--force")
    assert "not found" in refused(cluster, "inspect-repo", "in_put-1")


def test_ancestry_syntax_and_walking_past_the_root(cluster: Cluster) -> None:
    ok(cluster, "create-repo", "data")
    first = commit(cluster, "data", "master", "a")
    second = commit(cluster, "data", "master", "b")
    third = commit(cluster, "data", "master", "c")
    assert parent_of(cluster, "data", "master") == second
    for ref, want in (
        ("master", third),
        ("master^", second),
        ("master^^", first),
        ("master~2", first),
        ("master~0", third),
        (f"{third}^", second),
    ):
        detail = ok(cluster, "inspect-commit", "data", ref)
        assert detail.splitlines()[0] == f"Commit: data/{want}", ref
    # Files read through ancestry too.
    assert ok(cluster, "get-file", "data", "master~2", "a") == "a"
    assert "b" not in ok(cluster, "list-file", "data", "master^^")
    for past in ("master^^^", "master~3", "master~9"):
        line = refused(cluster, "inspect-commit", "data", past)
        assert "past" in line or "parent" in line or "not found" in line, line


def test_start_commit_refusals_change_nothing(cluster: Cluster) -> None:
    ok(cluster, "create-repo", "data")
    ok(cluster, "create-repo", "out")
    ok(cluster, "create-branch", "out", "master", "-p", "data/master")
    opened = ok(cluster, "start-commit", "data", "master").strip()
    line = refused(cluster, "start-commit", "data", "master")
    assert opened in line or "open" in line or "finished" in line, line
    assert commit_ids(cluster, "data") == [opened]
    line = refused(cluster, "start-commit", "out", "master")
    assert "provenance" in line or "output" in line, line
    assert commit_ids(cluster, "out") == []
    ok(cluster, "finish-commit", "data", "master")
    line = refused(cluster, "finish-commit", "data", opened)
    assert "finished" in line
    assert "not found" in refused(cluster, "start-commit", "nope", "master")
    line = refused(cluster, "start-commit", "data", "master", "-p", "0" * 32)
    assert "0" * 32 in line


def test_branch_rules(cluster: Cluster) -> None:
    for name in ("a", "b", "c"):
        ok(cluster, "create-repo", name)
    commit(cluster, "a", "master", "x")
    ok(cluster, "create-branch", "b", "master", "-p", "a/master")
    ok(cluster, "create-branch", "c", "master", "-p", "b/master")
    # Transitive: c/master's provenance holds a/master through b/master.
    detail = ok(cluster, "inspect-branch", "c", "master")
    assert "a/master" in detail and "b/master" in detail
    line = refused(cluster, "create-branch", "a", "master", "-p", "c/master")
    assert "cycle" in line or "provenance" in line, line
    line = refused(cluster, "create-branch", "a", "dev", "-p", "a/dev")
    assert "itself" in line or "own" in line or "provenance" in line, line
    hexname = "ab" * 16
    line = refused(cluster, "create-branch", "a", hexname)
    assert hexname in line
    assert "not found" in refused(cluster, "create-branch", "a", "v1", "--head", "0" * 32)
    assert sorted(ln.split()[0] for ln in ok(cluster, "list-branch", "a").splitlines()[1:]) == [
        "master"
    ]
    assert "not found" in refused(cluster, "delete-branch", "a", "nope")


def test_delete_commit_moves_heads_and_reparents(cluster: Cluster) -> None:
    ok(cluster, "create-repo", "data")
    first = commit(cluster, "data", "master", "a")
    second = commit(cluster, "data", "master", "b")
    third = commit(cluster, "data", "master", "c")
    ok(cluster, "delete-commit", "data", second)
    assert commit_ids(cluster, "data", "master") == [third, first]
    assert parent_of(cluster, "data", third) == first
    ok(cluster, "delete-commit", "data", "master")
    assert head(cluster, "data", "master") == first
    ok(cluster, "delete-commit", "data", first)
    assert head(cluster, "data", "master") == "-"
    assert commit_ids(cluster, "data") == []
    assert "not found" in refused(cluster, "delete-commit", "data", first)


def test_flush_and_subscribe_commit(cluster: Cluster) -> None:
    ok(cluster, "create-repo", "data")
    ok(cluster, "create-repo", "out")
    ok(cluster, "create-branch", "out", "master", "-p", "data/master")
    first = commit(cluster, "data", "master", "a")
    env = {**os.environ, "PACHD_ADDRESS": f"127.0.0.1:{cluster.grpc_port}"}
    sub = subprocess.Popen(
        [sys.executable, "-m", "programs.pachctl", "subscribe-commit", "data", "master", "--new"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)  # subscribed before the next commit
        second = commit(cluster, "data", "master", "b")
        assert sub.stdout is not None
        header = sub.stdout.readline().split()
        assert header[:3] == ["REPO", "ID", "PARENT"]
        row = sub.stdout.readline().split()
        assert row[:3] == ["data", second, first]  # --new: not the first commit
        assert sub.poll() is None  # streams forever
    finally:
        sub.kill()
        sub.wait()
    # flush-commit waits for the downstream commit; finish it from the side
    # (the downstream reaction opens it a moment after `second` finishes).
    wait_until(lambda: f"data/{second}" in ok(cluster, "inspect-commit", "out", "master"))
    out_head = head(cluster, "out", "master")
    assert out_head != "-"
    flusher = subprocess.Popen(
        [sys.executable, "-m", "programs.pachctl", "flush-commit", f"data/{second}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)
        assert flusher.poll() is None  # the out commit is still open
        ok(cluster, "finish-commit", "out", out_head)
        stdout, stderr = flusher.communicate(timeout=30)
    finally:
        if flusher.poll() is None:
            flusher.kill()
    assert flusher.returncode == 0, stderr
    rows = [line.split() for line in stdout.splitlines()[1:]]
    assert [row[:2] for row in rows] == [["out", out_head]]


def test_provenance_on_a_branch_without_commits_creates_it_headless(cluster: Cluster) -> None:
    ok(cluster, "create-repo", "images")
    ok(cluster, "create-repo", "edges")
    # images has no branch yet: naming images/master as provenance makes it
    # (Pachyderm 1.7), and the first commit there reaches edges.
    ok(cluster, "create-branch", "edges", "master", "-p", "images/master")
    assert head(cluster, "images", "master") == "-"
    assert head(cluster, "edges", "master") == "-"
    ok(cluster, "create-branch", "images", "stage", "-p", "images/raw")
    assert head(cluster, "images", "raw") == "-"
    first = commit(cluster, "images", "master", "a")
    # The downstream reaction opens edges' commit a moment after.
    wait_until(lambda: head(cluster, "edges", "master") != "-")
    detail = ok(cluster, "inspect-commit", "edges", "master")
    assert f"images/{first}" in detail
    # A missing repo is still an error, and changes nothing.
    assert "nope" in refused(cluster, "create-branch", "edges", "dev", "-p", "nope/master")
    assert sorted(ln.split()[0] for ln in ok(cluster, "list-branch", "edges").splitlines()[1:]) == [
        "master"
    ]
