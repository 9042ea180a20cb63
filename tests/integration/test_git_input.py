"""Git inputs end to end: a real git repository served by ``git daemon`` on
loopback, a pipeline with a git input (1.7's spec, ``URL`` spelled as 1.7
does), a push to the repository, the push webhook posted to the gateway's
HTTP port with a valid signature -> a commit in the input repo, a job, the
right output. Unsigned and wrongly signed pushes change nothing; local URLs
are refused at create-pipeline."""

from __future__ import annotations

import hmac
import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from programs.cluster.natsserver import free_port
from tests.integration.test_pachctl_files import ok, pachctl
from tests.support.cluster import Cluster, running, wait_until

SECRET = "s3cret-for-tests"


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd)}
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        check=True,
    )
    return done.stdout.decode().strip()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A bare repository ``src.git`` served by git daemon; its URL and a work
    tree that pushes to it."""
    base = tmp_path_factory.mktemp("gitsrv")
    git(base, "init", "-q", "--bare", "-b", "master", "src.git")
    port = free_port()
    daemon = subprocess.Popen(
        [
            "git",
            "daemon",
            "--reuseaddr",
            "--export-all",
            "--listen=127.0.0.1",
            f"--port={port}",
            f"--base-path={base}",
            str(base),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"git://127.0.0.1:{port}/src.git"
    work = base / "work"
    work.mkdir()
    git(work, "init", "-q", "-b", "master")
    git(work, "remote", "add", "origin", str(base / "src.git"))
    try:
        yield url, work
    finally:
        daemon.terminate()
        daemon.wait(10)


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, server: tuple[str, Path]
) -> Iterator[Cluster]:
    url, _ = server
    prefix = url.rsplit("/", 1)[0] + "/"
    yield from running(
        Path(tmp_path_factory.mktemp("git")) / "data",
        PACH_GIT_WEBHOOK_SECRET=SECRET,
        PACH_GIT_ALLOWED_URLS=prefix,
    )


def commit_and_push(work: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text)
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", message)
    git(work, "push", "-q", "origin", "master")
    return git(work, "rev-parse", "HEAD")


def payload(url: str, sha: str, ref: str = "refs/heads/master") -> bytes:
    body = {
        "ref": ref,
        "before": "0" * 40,
        "after": sha,
        "repository": {"name": "src", "clone_url": url, "url": url},
    }
    return json.dumps(body).encode()


def post(
    cluster: Cluster, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{cluster.http_port}/v1/handle/push",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "X-GitHub-Event": "push", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def signed(body: bytes, secret: str = SECRET, algo: str = "sha256") -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, algo).hexdigest()
    header = "X-Hub-Signature-256" if algo == "sha256" else "X-Hub-Signature"
    return {header: f"{algo}={digest}"}


def spec(url: str) -> dict[str, object]:
    return {
        "pipeline": {"name": "wc"},
        "transform": {
            "cmd": [
                "sh",
                "-c",
                "cat /pfs/src/*.txt | wc -l > /pfs/out/lines; ls /pfs/src > /pfs/out/ls",
            ]
        },
        "input": {"git": {"URL": url, "branch": "master"}},
    }


def commits(cluster: Cluster, repo: str) -> list[str]:
    out = ok(pachctl(cluster, "list-commit", repo)).decode().splitlines()
    return out[1:]


def test_push_webhook_runs_the_pipeline(
    cluster: Cluster, server: tuple[str, Path], tmp_path: Path
) -> None:
    url, work = server
    first = commit_and_push(work, {"a.txt": "1\n2\n", "sub/b.bin": "x"}, "one")
    spec_file = tmp_path / "wc.json"
    spec_file.write_text(json.dumps(spec(url)))
    ok(pachctl(cluster, "create-pipeline", "-f", str(spec_file)))
    # The input repo is named after the repository (1.7's default name).
    assert "src" in ok(pachctl(cluster, "list-repo")).decode()
    listed = ok(pachctl(cluster, "list-pipeline")).decode()
    assert f"src:{url}" in listed, listed
    shown = ok(pachctl(cluster, "inspect-pipeline", "wc")).decode()
    assert f"127.0.0.1:{cluster.http_port}/v1/handle/push" in shown, shown
    inspected = json.loads(ok(pachctl(cluster, "extract-pipeline", "wc")))
    assert inspected["input"]["git"] == {"name": "src", "URL": url, "branch": "master"}

    # Unsigned, wrongly signed: refused, nothing committed.
    body = payload(url, first)
    status, err = post(cluster, body)
    assert status == 401, err
    status, err = post(cluster, body, signed(body, "wrong"))
    assert status == 403, err
    status, err = post(cluster, body, {"X-Hub-Signature-256": "sha256=00"})
    assert status == 403, err
    assert commits(cluster, "src") == []

    status, reply = post(cluster, body, signed(body))
    assert status == 200, reply
    made = reply["commits"]
    assert isinstance(made, list) and len(made) == 1, made
    assert made[0]["repo"] == "src" and made[0]["sha"] == first
    ok(pachctl(cluster, "flush-commit", "src/master"))
    assert ok(pachctl(cluster, "get-file", "wc", "master", "/lines")).strip() == b"2"
    assert ok(pachctl(cluster, "get-file", "src", "master", "/sub/b.bin")) == b"x"
    assert ".git" not in ok(pachctl(cluster, "list-file", "src", "master", "/")).decode()

    # A redelivery (same sha) changes nothing; SHA-1 signatures work too.
    status, reply = post(cluster, body, signed(body, algo="sha1"))
    assert status == 200, reply
    assert len(commits(cluster, "src")) == 1

    # A push to another branch is not for this input.
    other = payload(url, first, ref="refs/heads/dev")
    status, reply = post(cluster, other, signed(other))
    assert status == 200 and reply["commits"] == [], reply

    # The next push: a new commit, a new job, the new output.
    second = commit_and_push(work, {"a.txt": "1\n2\n3\n", "c.txt": "4\n"}, "two")
    body = payload(url, second)
    status, reply = post(cluster, body, signed(body))
    assert status == 200, reply
    ok(pachctl(cluster, "flush-commit", "src/master"))
    assert len(commits(cluster, "src")) == 2

    def done() -> bool:
        got = pachctl(cluster, "get-file", "wc", "master", "/lines")
        return got.returncode == 0 and got.stdout.strip() == b"4"

    wait_until(done, 60)
    assert ok(pachctl(cluster, "get-file", "wc", "master", "/ls")).split() == [
        b"a.txt",
        b"c.txt",
        b"sub",
    ]
    jobs = ok(pachctl(cluster, "list-job", "-p", "wc")).decode().splitlines()[1:]
    assert len(jobs) == 2 and all("success" in j for j in jobs), jobs


def test_local_and_private_urls_are_refused(cluster: Cluster, tmp_path: Path) -> None:
    for bad in ("file:///etc", "/srv/repo.git", "http://127.0.0.2/x.git", "ext::sh -c id"):
        s = spec(bad)
        s["pipeline"] = {"name": "bad"}
        f = tmp_path / "bad.json"
        f.write_text(json.dumps(s))
        done = pachctl(cluster, "create-pipeline", "-f", str(f))
        assert done.returncode != 0, bad
        assert "git" in done.stderr.decode().lower(), done.stderr
    assert "bad" not in ok(pachctl(cluster, "list-pipeline")).decode()
