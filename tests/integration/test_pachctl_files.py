"""put-file, get-file, list-file and inspect-file through the real pachctl."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import ROOT, Cluster, running


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from running(Path(tmp_path_factory.mktemp("files")) / "data")


def pachctl(
    cluster: Cluster, *args: str, stdin: bytes | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PACHD_ADDRESS": f"127.0.0.1:{cluster.grpc_port}", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "programs.pachctl", *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        timeout=180,
    )


def ok(done: subprocess.CompletedProcess[bytes]) -> bytes:
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def test_put_and_get_round_trips(cluster: Cluster, tmp_path: Path) -> None:
    ok(pachctl(cluster, "create-repo", "data"))
    big = os.urandom(3 * 1024 * 1024 + 17)  # several put/get blocks
    (tmp_path / "big.bin").write_bytes(big)
    ok(pachctl(cluster, "put-file", "data", "master", "/big.bin", "-f", str(tmp_path / "big.bin")))
    ok(pachctl(cluster, "put-file", "data", "master", "/from-stdin", "-f", "-", stdin=b"hi\n"))
    ok(pachctl(cluster, "put-file", "data", "master", "/empty", "-f", "-", stdin=b""))

    got = ok(pachctl(cluster, "get-file", "data", "master", "/big.bin"))
    assert hashlib.sha256(got).digest() == hashlib.sha256(big).digest()
    out = tmp_path / "copy.bin"
    ok(pachctl(cluster, "get-file", "data", "master", "/big.bin", "-o", str(out)))
    assert out.read_bytes() == big
    assert ok(pachctl(cluster, "get-file", "data", "master", "/from-stdin")) == b"hi\n"
    assert ok(pachctl(cluster, "get-file", "data", "master", "/empty")) == b""
    # Each put on a branch without an open commit made a commit of its own.
    commits = ok(pachctl(cluster, "list-commit", "data")).decode().splitlines()
    assert len(commits) == 1 + 3


def test_recursive_put_append_overwrite_list_inspect(cluster: Cluster, tmp_path: Path) -> None:
    ok(pachctl(cluster, "create-repo", "tree"))
    src = tmp_path / "dir"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"aaa")
    (src / "sub" / "b.txt").write_bytes(b"bb")
    ok(pachctl(cluster, "start-commit", "tree", "master"))
    ok(pachctl(cluster, "put-file", "tree", "master", "/in", "-r", "-f", str(src)))
    ok(pachctl(cluster, "put-file", "tree", "master", "/log", "-f", "-", stdin=b"one\n"))
    ok(pachctl(cluster, "put-file", "tree", "master", "/log", "-f", "-", stdin=b"two\n"))
    ok(pachctl(cluster, "put-file", "tree", "master", "/new", "-f", "-", stdin=b"old"))
    ok(pachctl(cluster, "put-file", "tree", "master", "/new", "-o", "-f", "-", stdin=b"new"))
    ok(pachctl(cluster, "finish-commit", "tree", "master"))

    assert ok(pachctl(cluster, "get-file", "tree", "master", "/log")) == b"one\ntwo\n"  # append
    assert ok(pachctl(cluster, "get-file", "tree", "master", "/new")) == b"new"  # overwrite
    assert ok(pachctl(cluster, "get-file", "tree", "master", "/in/sub/b.txt")) == b"bb"

    lines = ok(pachctl(cluster, "list-file", "tree", "master", "/in")).decode().splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "SIZE"]
    rows = [ln.split() for ln in lines[1:]]
    assert rows == [["/in/a.txt", "file", "3B"], ["/in/sub", "dir", "2B"]]

    globbed = ok(pachctl(cluster, "glob-file", "tree", "master", "/in/*")).decode().splitlines()
    assert [ln.split()[0] for ln in globbed[1:]] == ["/in/a.txt", "/in/sub"]
    deep = ok(pachctl(cluster, "glob-file", "tree", "master", "/**.txt")).decode().splitlines()
    assert [ln.split()[0] for ln in deep[1:]] == ["/in/a.txt", "/in/sub/b.txt"]
    assert (
        ok(pachctl(cluster, "glob-file", "tree", "master", "/nomatch*")).decode().splitlines()[1:]
        == []
    )

    bad = pachctl(cluster, "glob-file", "tree", "master", "/[abc")
    assert bad.returncode == 1 and b"INVALID_ARGUMENT" in bad.stderr

    info = ok(pachctl(cluster, "inspect-file", "tree", "master", "/in/a.txt")).decode()
    assert info.splitlines()[:3] == ["Path: /in/a.txt", "Type: file", "Size: 3B"]
    raw = json.loads(ok(pachctl(cluster, "inspect-file", "tree", "master", "/in", "--raw")))
    assert raw["fileType"] == "DIR" and raw["sizeBytes"] == "5"
    listing = ok(pachctl(cluster, "list-repo")).decode()
    # a.txt 3 + sub/b.txt 2 + log 8 + new 3
    assert re.search(r"^tree\s+.*ago\s+16B\s*$", listing, re.MULTILINE), listing


def test_file_errors_are_one_line(cluster: Cluster, tmp_path: Path) -> None:
    ok(pachctl(cluster, "create-repo", "errs"))
    cases = [
        (("put-file", "errs", "master", "/x", "-f", str(tmp_path / "missing")), "no such file"),
        (("put-file", "errs", "master", "-f", "-"), "path in the repo is required"),
        (("put-file", "errs", "master", "/d", "-f", str(tmp_path)), "use -r"),
        (("put-file", "errs", "master", "/u", "-f", "http://example.invalid/x"), "example.invalid"),
        (("put-file", "errs", "master", "/../x", "-f", "-"), "INVALID_ARGUMENT"),
        (("get-file", "errs", "master", "/nothing"), "NOT_FOUND"),
        (("put-file", "nope", "master", "/x", "-f", "-"), "NOT_FOUND"),
    ]
    for args, message in cases:
        done = pachctl(cluster, *args, stdin=b"data")
        err = done.stderr.decode().strip()
        assert done.returncode == 1, (args, err)
        assert message in err and len(err.splitlines()) == 1, (args, err)
    # Nothing was written by any of them.
    assert ok(pachctl(cluster, "list-commit", "errs")).decode().splitlines()[1:] == []


def test_delete_file_in_an_open_commit(cluster: Cluster) -> None:
    ok(pachctl(cluster, "create-repo", "dels"))
    ok(pachctl(cluster, "put-file", "dels", "master", "/keep", "-f", "-", stdin=b"k"))
    ok(pachctl(cluster, "put-file", "dels", "master", "/dir/gone", "-f", "-", stdin=b"g"))
    ok(pachctl(cluster, "start-commit", "dels", "master"))
    ok(pachctl(cluster, "delete-file", "dels", "master", "/dir"))
    ok(pachctl(cluster, "finish-commit", "dels", "master"))
    rows = ok(pachctl(cluster, "list-file", "dels", "master")).decode().splitlines()[1:]
    assert [r.split()[0] for r in rows] == ["/keep"]
    # The parent commit still has it.
    assert ok(pachctl(cluster, "get-file", "dels", "master^", "/dir/gone")) == b"g"
