"""Two of Pachyderm 1.7's documented examples, run through pachctl as a user
would type them: splitting data on put-file and reassembling it with a glob
get-file (lines by size, JSON by count, a pg_dump-like file with a header and
a footer); and deferred processing (commits to a branch the pipeline does
not read trigger nothing until master is moved to them, and a pipeline that
reads `dev` runs on dev's commits only)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_pachctl_files import ok, pachctl
from tests.support.cluster import Cluster, running


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from running(Path(tmp_path_factory.mktemp("seed-examples")) / "data")


def names(cluster: Cluster, repo: str, path: str) -> list[str]:
    lines = ok(pachctl(cluster, "list-file", repo, "master", path)).decode().splitlines()
    return [ln.split()[0] for ln in lines[1:]]


def test_split_and_reassemble(cluster: Cluster) -> None:
    ok(pachctl(cluster, "create-repo", "seed_data"))
    # Lines, cut by size: no piece over 100 bytes but whole lines, 2+ pieces.
    lines = b"".join(b"%04d,%s\n" % (n, b"x" * (n % 13)) for n in range(60))
    ok(
        pachctl(
            cluster, "put-file", "seed_data", "master", "/lines", "--split", "line",
            "--target-file-bytes", "100", "-f", "-", stdin=lines,
        )
    )  # fmt: skip
    pieces = names(cluster, "seed_data", "/lines")
    assert len(pieces) > 2
    for piece in pieces:
        data = ok(pachctl(cluster, "get-file", "seed_data", "master", piece))
        assert data.endswith(b"\n") and len(data) <= 100 + 20, (piece, data)
    assert ok(pachctl(cluster, "get-file", "seed_data", "master", "/lines/*")) == lines

    # JSON documents, 3 per piece.
    docs = [{"user": n, "tags": ["a", "b"][: n % 3]} for n in range(10)]
    stream = b"".join(json.dumps(d).encode() + b"\n" for d in docs)
    ok(
        pachctl(
            cluster, "put-file", "seed_data", "master", "/users", "--split", "json",
            "--target-file-datums", "3", "-f", "-", stdin=stream,
        )
    )  # fmt: skip
    assert len(names(cluster, "seed_data", "/users")) == 4
    # The pieces hold the documents as they came (1.7: the raw values), so
    # the glob gives a stream of them back.
    whole = ok(pachctl(cluster, "get-file", "seed_data", "master", "/users/*")).decode()
    decoder, at, got = json.JSONDecoder(), 0, []
    while at < len(whole.rstrip()):
        value, at = decoder.raw_decode(whole, at)
        got.append(value)
        at += len(whole[at:]) - len(whole[at:].lstrip())
    assert got == docs

    # A pg_dump: its COPY header and its terminator become the directory's
    # header and footer; the rows are split; the glob gives the dump back.
    header = b"COPY public.users (id, name) FROM stdin;\n"
    rows = b"".join(b"%d\tuser%d\n" % (n, n) for n in range(9))
    footer = b"\\.\n"
    ok(
        pachctl(
            cluster, "put-file", "seed_data", "master", "/pg", "--split", "line",
            "--target-file-datums", "4", "-f", "-", stdin=rows,
        )
    )  # fmt: skip
    ok(pachctl(cluster, "put-header", "seed_data", "master", "/pg", "-f", "-", stdin=header))
    ok(pachctl(cluster, "put-footer", "seed_data", "master", "/pg", "-f", "-", stdin=footer))
    pieces = names(cluster, "seed_data", "/pg")
    assert len(pieces) == 3
    dump = ok(pachctl(cluster, "get-file", "seed_data", "master", "/pg/*"))
    assert dump == header + rows + footer
    # Each piece alone is a loadable dump too.
    first = ok(pachctl(cluster, "get-file", "seed_data", "master", pieces[0]))
    assert first.startswith(header) and first.endswith(footer)


def job_count(cluster: Cluster, pipeline: str) -> int:
    return len(ok(pachctl(cluster, "list-job", "-p", pipeline)).decode().splitlines()) - 1


def commit(cluster: Cluster, repo: str, branch: str, name: str, data: bytes) -> None:
    ok(pachctl(cluster, "put-file", repo, branch, name, "-f", "-", stdin=data))


def test_deferred_processing(cluster: Cluster, tmp_path: Path) -> None:
    ok(pachctl(cluster, "create-repo", "dp_in"))
    spec = {
        "pipeline": {"name": "dp_copy"},
        "transform": {"cmd": ["sh"], "stdin": ["cp -r /pfs/dp_in/. /pfs/out/"]},
        "input": {"atom": {"repo": "dp_in", "glob": "/"}},
    }
    (tmp_path / "copy.json").write_text(json.dumps(spec))
    ok(pachctl(cluster, "create-pipeline", "-f", str(tmp_path / "copy.json")))
    # Data lands on dev, commit after commit: the pipeline reads master, so
    # nothing runs.
    ok(pachctl(cluster, "create-branch", "dp_in", "dev"))
    commit(cluster, "dp_in", "dev", "/a", b"A")
    commit(cluster, "dp_in", "dev", "/b", b"B")
    time.sleep(2)
    assert job_count(cluster, "dp_copy") == 0
    # Move master to dev's head: one job, over everything dev holds.
    ok(pachctl(cluster, "create-branch", "dp_in", "master", "--head", "dev"))
    ok(pachctl(cluster, "flush-commit", "dp_in/master"))
    assert job_count(cluster, "dp_copy") == 1
    assert ok(pachctl(cluster, "get-file", "dp_copy", "master", "/b")) == b"B"
    # More on dev: still nothing until master moves again.
    commit(cluster, "dp_in", "dev", "/c", b"C")
    time.sleep(2)
    assert job_count(cluster, "dp_copy") == 1
    ok(pachctl(cluster, "create-branch", "dp_in", "master", "--head", "dev"))
    ok(pachctl(cluster, "flush-commit", "dp_in/master"))
    assert job_count(cluster, "dp_copy") == 2
    assert ok(pachctl(cluster, "get-file", "dp_copy", "master", "/c")) == b"C"

    # A pipeline that reads dev runs on dev's commits, not on master's.
    dev_spec = {
        "pipeline": {"name": "dp_dev"},
        "transform": {"cmd": ["sh"], "stdin": ["ls /pfs/dp_in > /pfs/out/seen"]},
        "input": {"atom": {"repo": "dp_in", "branch": "dev", "glob": "/"}},
    }
    (tmp_path / "dev.json").write_text(json.dumps(dev_spec))
    ok(pachctl(cluster, "create-pipeline", "-f", str(tmp_path / "dev.json")))
    ok(pachctl(cluster, "flush-commit", "dp_in/dev"))
    before = job_count(cluster, "dp_dev")
    commit(cluster, "dp_in", "master", "/m", b"M")
    ok(pachctl(cluster, "flush-commit", "dp_in/master"))
    assert job_count(cluster, "dp_dev") == before
    commit(cluster, "dp_in", "dev", "/d", b"D")
    ok(pachctl(cluster, "flush-commit", "dp_in/dev"))
    assert job_count(cluster, "dp_dev") == before + 1
    seen = ok(pachctl(cluster, "get-file", "dp_dev", "master", "/seen")).decode().split()
    assert seen == ["a", "b", "c", "d"]
