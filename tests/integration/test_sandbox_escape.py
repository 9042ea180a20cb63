"""The sandbox of pipeline user code, attacked through real pipelines on a
real cluster (pachctl create-pipeline, real workers, bubblewrap).

User code tries to remount host paths writable, write outside /pfs/out (a
world-writable marker directory on the host, the cluster's data dir), read
/etc/shadow, /root, the data dir and the project tree, find the cluster's
secrets in its environment, escalate (nested user namespaces, setpriv,
setuid binaries), exceed its memory limit and fork-bomb: each fails inside
the sandbox, the host marker directory is byte-for-byte unchanged, and the
cluster keeps serving (a later normal job succeeds). transform.user is
honoured (inside the user namespace only) and the worker caps refuse
create-pipeline / update-pipeline with a precise error."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.integration.test_pachctl_files import ok, pachctl
from tests.support.cluster import ROOT, Cluster, running

SANDBOX_UID = 65534
PIDS = 96
SECRET = "s3cr3t-" + secrets.token_hex(4)


@pytest.fixture(scope="module")
def world() -> Iterator[dict[str, Path]]:
    """Host places a sandbox must not touch, open to everyone by their
    permissions (only the sandbox stands between user code and them)."""
    top = Path(tempfile.mkdtemp(prefix="pach-escape-"))
    top.chmod(0o755)
    marker = top / "marker"
    marker.mkdir()
    marker.chmod(0o777)
    (marker / "keep").write_text("the host's own bytes\n")
    (marker / "keep").chmod(0o666)
    data = top / "data"
    data.mkdir()
    data.chmod(0o777)
    root_file = Path("/root") / f".pach-escape-{secrets.token_hex(4)}"
    root_file.write_text("root's secret\n")
    root_file.chmod(0o644)
    try:
        yield {"top": top, "marker": marker, "data": data, "root_file": root_file}
    finally:
        root_file.unlink(missing_ok=True)
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(world: dict[str, Path]) -> Iterator[Cluster]:
    yield from running(
        world["data"],
        PACH_MAX_WORKERS_PER_PIPELINE="3",
        PACH_MAX_WORKERS="6",
        PACH_PPS_SANDBOX_PIDS=str(PIDS),
        # Secrets of the cluster's processes user code must not see.
        PACH_NATS_PASSWORD=SECRET,
        NATS_TOKEN=SECRET,
        AWS_SESSION_TOKEN=SECRET,
        MONGODB_URI=f"mongodb://u:{SECRET}@h",
        PACH_SOME_TOKEN=SECRET,
    )


def snapshot(top: Path) -> dict[str, tuple[int, bytes]]:
    out: dict[str, tuple[int, bytes]] = {}
    for path in sorted(top.rglob("*")):
        st = path.lstat()
        body = path.read_bytes() if stat.S_ISREG(st.st_mode) else b""
        out[str(path.relative_to(top))] = (st.st_mode, body)
    return out


def sandbox_uid_pids(job_id: str) -> set[int]:
    """Processes running as the sandbox uid for ``job_id`` (not another
    cluster's, which a parallel test may run)."""
    found = set()
    for p in psutil.process_iter(["uids", "environ"]):
        env = p.info["environ"] or {}
        if p.info["uids"].real == SANDBOX_UID and env.get("PACH_JOB_ID") == job_id:
            found.add(p.pid)
    return found


def create(cluster: Cluster, tmp: Path, spec: dict[str, Any], *, update: bool = False) -> Any:
    path = tmp / f"{spec['pipeline']['name']}.json"
    path.write_text(json.dumps(spec))
    return pachctl(cluster, "update-pipeline" if update else "create-pipeline", "-f", str(path))


def spec(name: str, script: str, **extra: Any) -> dict[str, Any]:
    return {
        "pipeline": {"name": name},
        "transform": {"cmd": ["sh"], "stdin": [script], **extra.pop("transform", {})},
        "input": {"atom": {"repo": "in", "glob": "/"}},
        "datum_tries": 1,
        **extra,
    }


def jobs(cluster: Cluster, pipeline: str) -> list[dict[str, Any]]:
    """Wait for the pipeline's jobs on in@master; their JSON."""
    raw = ok(pachctl(cluster, "flush-job", "in/master", "-p", pipeline, "--raw")).decode()
    found: list[dict[str, Any]] = []
    decoder = json.JSONDecoder()
    pos = 0
    while (pos := _skip(raw, pos)) < len(raw):
        doc, pos = decoder.raw_decode(raw, pos)
        found.append(doc)
    return found


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def get(cluster: Cluster, repo: str, path: str) -> str:
    return ok(pachctl(cluster, "get-file", repo, "master", path)).decode()


@pytest.fixture(scope="module")
def made(cluster: Cluster) -> str:
    ok(pachctl(cluster, "create-repo", "in"))
    ok(pachctl(cluster, "put-file", "in", "master", "/a", "-f", "-", stdin=b"input\n"))
    ok(pachctl(cluster, "create-repo", "idle"))  # no commit: no job, no worker
    return "in"


@pytest.fixture
def repo(cluster: Cluster, made: str) -> Iterator[str]:
    yield made
    ok(pachctl(cluster, "delete-pipeline", "--all"))  # room under the worker caps


ATTACKS = r"""
chk() {
  name=$1; shift
  if "$@" >/dev/null 2>&1 </dev/null; then v=ESCAPED; else v=BLOCKED; fi
  echo "$name:$v" >> /pfs/out/report
}
export W="^(PACH_NATS_|NATS_|AWS_|PACH_S3_|MONGODB_URI|PACH_DATA_DIR|PACH_PPS_)"
chk remount-usr mount -o remount,bind,rw /usr
chk remount-root mount -o remount,rw /
chk bind-over-usr mount --bind /tmp /usr
chk mount-tmpfs mount -t tmpfs none /pfs/out
chk write-usr touch /usr/pach-escape
chk write-etc touch /etc/pach-escape
chk write-root-fs touch /pach-escape
chk write-marker sh -c 'echo x > "$MARKER/escape"'
chk append-marker sh -c 'echo x >> "$MARKER/keep"'
chk write-data sh -c 'echo x > "$DATA/escape"'
chk read-data sh -c 'ls -A "$DATA" | grep -q .'
chk read-shadow sh -c 'grep -q root /etc/shadow'
chk read-gshadow sh -c 'grep -q root /etc/gshadow'
chk read-root-file cat "$ROOT_FILE"
chk list-root sh -c 'ls -A /root | grep -v "^.pyenv$" | grep -q .'
chk read-project cat "$PROJECT/pyproject.toml"
chk list-project sh -c 'ls -A "$PROJECT" | grep -v "^.venv$" | grep -q .'
chk read-home sh -c 'ls -A /home | grep -q .'
chk read-var sh -c 'ls -A /var | grep -q .'
chk read-sys sh -c 'ls /sys/fs/cgroup'
chk unshare-r unshare -r true
chk unshare-user unshare -U true
chk setpriv-root setpriv --reuid=0 --regid=0 --clear-groups true
chk su su -c true root
chk sudo sudo -n true
chk caps sh -c 'grep -E "^Cap(Eff|Prm|Bnd):" /proc/self/status | grep -qv "0000000000000000"'
chk no-nnp sh -c '! grep -q "^NoNewPrivs:[[:space:]]*1" /proc/self/status'
chk uid-0 sh -c '[ "$(id -u)" = 0 ]'
chk host-pids sh -c '[ "$(ls /proc | grep -c "^[0-9]")" -gt 20 ]'
chk secret-env sh -c 'env | grep -q "$SECRET_PATTERN"'
chk worker-env sh -c 'env | grep -qE "$W"'
python3 -c 'import sys; print(sys.prefix)' > /pfs/out/python
id -u > /pfs/out/uid
mkdir -p /pfs/out/d && echo deep > /pfs/out/d/f && chmod 600 /pfs/out/d/f
ln -s /pfs/in/a /pfs/out/link
"""


def test_attacks_fail_inside_the_sandbox(
    cluster: Cluster, repo: str, world: dict[str, Path], tmp_path: Path
) -> None:
    before = snapshot(world["marker"])
    env = {
        "MARKER": str(world["marker"]),
        "DATA": str(world["data"]),
        "ROOT_FILE": str(world["root_file"]),
        "PROJECT": str(ROOT),
        "SECRET_PATTERN": SECRET[::-1],  # reversed: the spec itself holds no secret
    }
    script = ATTACKS.replace('"$SECRET_PATTERN"', '"$(echo $SECRET_PATTERN | rev)"')
    ok(create(cluster, tmp_path, spec("attack", script, transform={"env": env})))
    [job] = jobs(cluster, "attack")
    assert job["state"] == "JOB_SUCCESS", job
    report = dict(line.split(":") for line in get(cluster, "attack", "/report").split())
    assert len(report) == ATTACKS.count("\nchk ")
    escaped = sorted(name for name, verdict in report.items() if verdict != "BLOCKED")
    assert escaped == []
    # The code ran as the sandbox uid, with the cluster's Python.
    assert get(cluster, "attack", "/uid").strip() == str(SANDBOX_UID)
    assert get(cluster, "attack", "/python").strip()
    # What the sandbox uid wrote (even mode 600) is uploaded.
    assert get(cluster, "attack", "/d/f") == "deep\n"
    assert get(cluster, "attack", "/link") == "input\n"
    assert snapshot(world["marker"]) == before
    assert not (world["data"] / "escape").exists()
    assert not Path("/usr/pach-escape").exists() and not Path("/pach-escape").exists()


def test_memory_limit_kills_the_datum_with_a_reason(
    cluster: Cluster, repo: str, tmp_path: Path
) -> None:
    hog = "python3 -c 'b = bytearray(256 << 20); print(len(b))' > /pfs/out/n"
    ok(create(cluster, tmp_path, spec("hog", hog, resource_limits={"memory": "40M"})))
    [job] = jobs(cluster, "hog")
    assert job["state"] == "JOB_FAILURE", job
    assert "exceeded its memory limit of 40M (resource_limits.memory)" in job["reason"]


def test_fork_bomb_hits_the_process_limit_and_the_cluster_keeps_serving(
    cluster: Cluster, repo: str, world: dict[str, Path], tmp_path: Path
) -> None:
    before = snapshot(world["marker"])
    bomb = "f() { f | f & }; f; sleep 3; exit 3"
    started = time.monotonic()
    ok(create(cluster, tmp_path, spec("bomb", bomb, datum_timeout="30s")))
    [job] = jobs(cluster, "bomb")
    assert time.monotonic() - started < 90
    assert job["state"] == "JOB_FAILURE", job
    assert f"reached its limit of {PIDS} processes" in job["reason"], job["reason"]
    # Nothing of the bomb is left running as the sandbox uid.
    deadline = time.monotonic() + 5
    while (left := sandbox_uid_pids(job["job"]["id"])) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == set()
    # The cluster still serves: a normal pipeline's job succeeds.
    ok(create(cluster, tmp_path, spec("after", "cat /pfs/in/a > /pfs/out/copy")))
    [after] = jobs(cluster, "after")
    assert after["state"] == "JOB_SUCCESS", after
    assert get(cluster, "after", "/copy") == "input\n"
    assert snapshot(world["marker"]) == before


def test_transform_user_is_the_identity_inside_the_namespace(
    cluster: Cluster, repo: str, tmp_path: Path
) -> None:
    user, expected, name = "1234:2345", "1234 2345", "user"
    script = (
        'echo "$(id -u) $(id -g)" > /pfs/out/id; '
        "awk '/^CapEff/{print $2}' /proc/self/status > /pfs/out/caps; "
        "touch /usr/x 2>/dev/null && echo escaped >> /pfs/out/id; "
        "ls -ln /pfs/out/id | awk '{print $3}' > /pfs/out/owner"
    )
    ok(create(cluster, tmp_path, spec(name, script, transform={"user": user})))
    [job] = jobs(cluster, name)
    assert job["state"] == "JOB_SUCCESS", job
    assert get(cluster, name, "/id").strip() == expected
    assert get(cluster, name, "/owner").strip() == expected.split()[0]
    assert get(cluster, name, "/caps").strip() == "0000000000000000"  # even as uid 0


def idle(name: str, **parallelism: int) -> dict[str, Any]:
    """A pipeline that starts no worker (standby, on a repo without commits)."""
    return {
        **spec(name, "true", parallelism_spec=parallelism, standby=True),
        "input": {"atom": {"repo": "idle", "glob": "/"}},
    }


def test_worker_caps_refuse_the_pipeline(cluster: Cluster, repo: str, tmp_path: Path) -> None:
    huge = idle("huge", constant=100000)
    done = create(cluster, tmp_path, huge)
    assert done.returncode != 0
    err = done.stderr.decode()
    assert "parallelism_spec asks for 100000 workers, more than the cap of 3 workers per " in err
    assert "PACH_MAX_WORKERS_PER_PIPELINE" in err
    coeff = create(cluster, tmp_path, idle("coeff", coefficient=64))
    assert coeff.returncode != 0 and "cap of 3 workers per pipeline" in coeff.stderr.decode()
    # Nothing was created by the refused calls.
    assert b"huge" not in ok(pachctl(cluster, "list-repo"))
    # The cluster's cap counts every pipeline's workers.
    ok(create(cluster, tmp_path, idle("three", constant=3)))
    used = sum(
        1 for line in ok(pachctl(cluster, "list-pipeline")).decode().splitlines()[1:] if line
    )
    assert used == 1
    ok(create(cluster, tmp_path, idle("two", constant=2)))
    over = create(cluster, tmp_path, idle("over", constant=2))
    assert over.returncode != 0
    assert (
        "pipeline over: parallelism_spec asks for 2 workers, but the other pipelines have 5 "
        "and the cluster's cap is 6 workers (PACH_MAX_WORKERS)"
    ) in over.stderr.decode()
    # update-pipeline is held to the same caps and leaves the pipeline as it was.
    up = create(cluster, tmp_path, {**huge, "pipeline": {"name": "three"}}, update=True)
    assert up.returncode != 0 and "cap of 3 workers per pipeline" in up.stderr.decode()
    raw = ok(pachctl(cluster, "inspect-pipeline", "three", "--raw")).decode()
    assert json.loads(raw)["parallelismSpec"]["constant"] == "3"


def test_bad_resource_limits_are_refused(cluster: Cluster, repo: str, tmp_path: Path) -> None:
    bad = spec("badmem", "true", resource_limits={"memory": "lots"})
    done = create(cluster, tmp_path, bad)
    assert done.returncode != 0
    assert "resource_limits.memory 'lots' is not a memory size" in done.stderr.decode()
    user = create(cluster, tmp_path, spec("baduser", "true", transform={"user": "a b;c"}))
    assert user.returncode != 0 and "transform.user" in user.stderr.decode()


def test_symlink_to_a_host_secret_is_not_uploaded(
    cluster: Cluster, repo: str, world: dict[str, Path], tmp_path: Path
) -> None:
    script = f"ln -s {world['root_file']} /pfs/out/leak; ln -s /etc/shadow /pfs/out/shadow"
    ok(create(cluster, tmp_path, spec("leak", script)))
    [job] = jobs(cluster, "leak")
    assert job["state"] == "JOB_FAILURE", job
    assert "which the worker cannot read" in job["reason"] or "cannot read" in job["reason"]
    assert os.path.exists(world["root_file"])
