"""transform.secrets end to end through pachctl (gRPC): a Kubernetes Secret
manifest stored with create-secret, a pipeline that reads one key as an
environment variable and the whole secret at its mount_path; a pipeline
that did not name it cannot read the store; the value is in neither the
event log (an extract) nor the data dir outside the store; delete-secret
removes it, after which the pipeline's next job fails saying so; a pipeline
naming a missing secret fails the same way.

The data dir lies outside /tmp here (which the sandbox replaces anyway), so
that hiding it from user code is really tested."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_pachctl_files import ok, pachctl
from tests.support.cluster import ROOT, Cluster, running

TOKEN = "tok-" + secrets.token_hex(16)
PASSWORD = "pw-" + secrets.token_hex(16)


@pytest.fixture(scope="module")
def data_dir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix=".test-secrets-", dir=ROOT))
    try:
        yield base / "data"
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(data_dir: Path) -> Iterator[Cluster]:
    yield from running(data_dir)


def manifest(tmp_path: Path, name: str, **extra: object) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "Opaque",
        "data": {"token": base64.b64encode(TOKEN.encode()).decode()},
        "stringData": {"password": PASSWORD},
        **extra,
    }
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(doc))
    return path


def pipeline(
    cluster: Cluster, tmp_path: Path, name: str, cmd: str, secrets: list[dict[str, str]]
) -> None:
    spec = {
        "pipeline": {"name": name},
        "transform": {"cmd": ["sh", "-c", cmd], "secrets": secrets},
        "input": {"atom": {"repo": "in", "glob": "/"}},
        "datum_tries": 1,
    }
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(spec))
    ok(pachctl(cluster, "create-pipeline", "-f", str(path)))


def put(cluster: Cluster, text: str) -> None:
    ok(pachctl(cluster, "put-file", "in", "master", "/f", "-o", "-f", "-", stdin=text.encode()))


def last_job(cluster: Cluster, name: str) -> str:
    ok(pachctl(cluster, "flush-commit", "in/master"))
    rows = ok(pachctl(cluster, "list-job", "-p", name)).decode().splitlines()[1:]
    job = rows[0].split()[0]
    return ok(pachctl(cluster, "inspect-job", job, "-b")).decode()


def get(cluster: Cluster, repo: str, path: str) -> bytes:
    """A file's bytes over the gateway's HTTP (quicker than a pachctl run)."""
    url = f"http://127.0.0.1:{cluster.http_port}/pfs/{repo}/master/{path}"
    with urllib.request.urlopen(url, timeout=30) as reply:
        data: bytes = reply.read()
    return data


def sha(text: str) -> bytes:
    return hashlib.sha256(text.encode()).hexdigest().encode()


def files_holding(root: Path, needle: bytes, skip: Path) -> list[Path]:
    found = []
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            if p.is_relative_to(skip) or not p.is_file():
                continue
            if needle in p.read_bytes():
                found.append(p)
    return found


def test_secrets(cluster: Cluster, data_dir: Path, tmp_path: Path) -> None:
    ok(pachctl(cluster, "create-repo", "in"))
    # Bad manifests create nothing.
    bad = manifest(tmp_path, "bad", kind="ConfigMap")
    done = pachctl(cluster, "create-secret", "-f", str(bad))
    assert done.returncode != 0 and "kind must be Secret" in done.stderr.decode()
    bad.write_text(json.dumps({"kind": "Secret", "metadata": {"name": "b"}, "data": {"k": "!"}}))
    done = pachctl(cluster, "create-secret", "-f", str(bad))
    assert done.returncode != 0 and "not base64" in done.stderr.decode()

    ok(pachctl(cluster, "create-secret", "-f", str(manifest(tmp_path, "creds"))))
    listed = ok(pachctl(cluster, "list-secret")).decode()
    assert re.search(r"^creds\s+Opaque\s", listed, re.M), listed
    assert TOKEN not in listed and PASSWORD not in listed
    shown = ok(pachctl(cluster, "inspect-secret", "creds")).decode()
    assert "Name: creds" in shown and TOKEN not in shown

    store = data_dir / "secrets"
    assert stat.S_IMODE((store / "data" / "creds").stat().st_mode) == 0o700
    assert stat.S_IMODE((store / "data" / "creds" / "token").stat().st_mode) == 0o600
    assert (store / "data" / "creds" / "password").read_text() == PASSWORD

    # Only hashes leave the sandbox: the output must not hold the values.
    pipeline(
        cluster,
        tmp_path,
        "uses",
        'printf %s "$TOKEN" | sha256sum | cut -d" " -f1 > /pfs/out/env; '
        "sha256sum < /secrets/creds/password | cut -d' ' -f1 > /pfs/out/mounted; "
        "ls /secrets/creds > /pfs/out/keys",
        [
            {"name": "creds", "key": "token", "env_var": "TOKEN"},
            {"name": "creds", "mount_path": "/secrets/creds"},
        ],
    )
    store_file = store / "data" / "creds" / "token"
    pipeline(
        cluster,
        tmp_path,
        "snoop",
        f'test -r "{store_file}" && echo readable >/pfs/out/store || echo hidden >/pfs/out/store;'
        f' test -e "{data_dir}/objects" && echo seen >/pfs/out/data || echo hidden >/pfs/out/data;'
        ' echo "${TOKEN:-unset}" > /pfs/out/env',
        [],
    )
    put(cluster, "one")
    assert "State: success" in last_job(cluster, "uses")
    assert "State: success" in last_job(cluster, "snoop")
    assert get(cluster, "uses", "env").strip() == sha(TOKEN)
    assert get(cluster, "uses", "mounted").strip() == sha(PASSWORD)
    assert get(cluster, "uses", "keys").split() == [
        b"password",
        b"token",
    ]
    assert get(cluster, "snoop", "store").strip() == b"hidden"
    assert get(cluster, "snoop", "data").strip() == b"hidden"
    assert get(cluster, "snoop", "env").strip() == b"unset"

    # Not in the event log, not anywhere in the data dir but the store.
    backup = tmp_path / "backup"
    with open(backup, "wb") as out:
        done = pachctl(cluster, "extract")
        assert done.returncode == 0, done.stderr.decode()
        out.write(done.stdout)
    raw = backup.read_bytes()
    assert len(raw) > 0
    for value in (TOKEN, PASSWORD):
        for form in (value.encode(), base64.b64encode(value.encode())):
            assert form not in raw
            assert files_holding(data_dir, form, skip=store) == []

    # A pipeline naming a missing secret fails, saying which.
    pipeline(cluster, tmp_path, "missing", "true", [{"name": "nope", "key": "k", "env_var": "X"}])
    put(cluster, "two")
    info = last_job(cluster, "missing")
    assert "State: failure" in info and "secret 'nope' not found" in info, info

    # delete-secret: gone from the list and the disk; the next job fails.
    ok(pachctl(cluster, "delete-secret", "creds"))
    assert "creds" not in ok(pachctl(cluster, "list-secret")).decode()
    assert not (store / "data" / "creds").exists()
    done = pachctl(cluster, "inspect-secret", "creds")
    assert done.returncode != 0 and "not found" in done.stderr.decode()
    put(cluster, "three")
    info = last_job(cluster, "uses")
    assert "State: failure" in info and "secret 'creds' not found" in info, info


def test_bad_secret_references_are_refused(cluster: Cluster, tmp_path: Path) -> None:
    for secret, what in (
        ({"name": "x"}, "neither env_var nor mount_path"),
        ({"name": "x", "mount_path": "/pfs/x"}, "outside /pfs"),
        ({"name": "x", "mount_path": "/etc/x"}, "new top-level directory"),
        ({"name": "Bad_Name", "mount_path": "/s"}, "secret name"),
    ):
        spec = {
            "pipeline": {"name": "refused"},
            "transform": {"cmd": ["true"], "secrets": [secret]},
            "input": {"atom": {"repo": "in", "glob": "/"}},
        }
        path = tmp_path / "refused.json"
        path.write_text(json.dumps(spec))
        done = pachctl(cluster, "create-pipeline", "-f", str(path))
        assert done.returncode != 0 and what in done.stderr.decode(), (secret, done.stderr)
    assert "refused" not in ok(pachctl(cluster, "list-pipeline")).decode()
