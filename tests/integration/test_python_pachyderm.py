"""The published python-pachyderm 1.8.6 client against our gateway.

Its generated protobuf modules define the same message names as ours, so it
runs in its own virtualenv (.venv-compat, installed by `make test-deps`) and
process; it needs the pure-Python protobuf runtime."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import ROOT, Cluster, running

COMPAT_PYTHON = ROOT / ".venv-compat" / "bin" / "python"


def run_scenario(cluster: Cluster, script: str) -> dict[str, object]:
    if os.environ.get("PACH_SKIP_COMPAT") == "1":
        pytest.skip("PACH_SKIP_COMPAT=1")
    if not COMPAT_PYTHON.exists():
        pytest.fail(f"{COMPAT_PYTHON} is missing: run `make test-deps` to install python-pachyderm")
    env = {**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [
            str(COMPAT_PYTHON),
            str(ROOT / "tests" / "compat" / script),
            "127.0.0.1",
            str(cluster.grpc_port),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from running(Path(tmp_path_factory.mktemp("compat")) / "data")


def test_repos_with_python_pachyderm(cluster: Cluster) -> None:
    seen = run_scenario(cluster, "pp_repos.py")
    assert seen["listed"] == ["compat_edges", "compat_images"]
    assert seen["inspected"] == {
        "name": "compat_images",
        "description": "from python-pachyderm",
        "size_bytes": 0,
        "created": seen["inspected"]["created"],  # type: ignore[index]
    }
    assert int(seen["inspected"]["created"]) > 0  # type: ignore[index]
    assert seen["duplicate"] == "ALREADY_EXISTS"
    assert seen["missing"] == "NOT_FOUND"
    assert seen["after_delete"] == ["compat_images"]
    assert seen["after_delete_all"] == []


def test_commits_and_files_with_python_pachyderm(cluster: Cluster) -> None:
    seen = run_scenario(cluster, "pp_files.py")
    assert seen["commit_id_len"] == 32
    assert seen["big_sha256_equal"] is True
    assert seen["small"] == "hello\n"
    # pfs.FileType: RESERVED = 0, FILE = 1, DIR = 2
    assert seen["root_listing"] == [["/big.bin", 1, 5_120_000], ["/dir", 2, 6]]
    assert seen["globbed"] == ["/big.bin", "/dir"]
    assert seen["inspected"] == {"id_matches": True, "size": 5_120_006}
    assert seen["after_delete"] == []
    assert seen["commits"] == 2
    assert seen["branches"] == ["master"]
    assert seen["flushed"] == 0  # nothing downstream of pp_data
    assert seen["subscribed_first_is_root"] is True
    assert seen["deleted_read"] == "NOT_FOUND"


def test_pipelines_jobs_and_datums_with_python_pachyderm(cluster: Cluster) -> None:
    seen = run_scenario(cluster, "pp_pipelines.py")
    assert seen["pipelines"] == ["pp_upper"]
    assert seen["inspected_pipeline"] == {
        "description": "from python-pachyderm",
        "cmd": ["sh"],
        "glob": "/*",
        "output_branch": "master",
    }
    assert seen["job"] == {
        "state": "JOB_SUCCESS",
        "processed": 2,
        "total": 2,
        "output_repo": "pp_upper",
        "pipeline": "pp_upper",
    }
    assert seen["datums"] == [["SUCCESS", ["/a.txt"]], ["SUCCESS", ["/b.txt"]]]
    assert seen["inspected_datum_matches"] is True
    assert seen["output"] == {"/a.txt": "ALPHA\n", "/b.txt": "BETA\n"}
    assert seen["logs"] == ["upper-cased /pfs/pp_words/a.txt", "upper-cased /pfs/pp_words/b.txt"]
    assert seen["missing"] == "NOT_FOUND"
    assert seen["after_delete"] == []


def test_update_pipeline_in_a_chain_with_python_pachyderm(cluster: Cluster) -> None:
    """Issue 17: after update-pipeline pp_u1 (plain, then --reprocess), a
    flush of u1's new head waits for d1 and the cross x, which ran on it."""
    seen = run_scenario(cluster, "pp_chain.py")

    def ran_on_u1(ver: str) -> dict[str, object]:
        on_u1 = {"finished": True, "on_new_u1": True}
        return {
            "u1_ver": ver,
            "pp_d1": on_u1,
            "pp_x": on_u1,
            "d1_ver": ver,
            "x_both": "a\n" + ver,
        }

    assert seen["flushed_src"] == ["pp_d1", "pp_u1", "pp_x"]
    assert seen["created"] == ran_on_u1("v1\n")
    # Without reprocess the salt stays: u1's datum is skipped and its v1
    # output reused (1.7), in a new output commit that d1 and x run on.
    assert seen["updated_new_u1_commit"] is True
    assert seen["flushed_update"] == ["pp_d1", "pp_x"]
    assert seen["updated"] == ran_on_u1("v1\n")
    assert seen["reprocessed_new_u1_commit"] is True
    assert seen["flushed_reprocess"] == ["pp_d1", "pp_x"]
    assert seen["reprocessed"] == ran_on_u1("v3\n")


@pytest.fixture(scope="module")
def stop_union(cluster: Cluster) -> dict[str, object]:
    """pp_stop_union.py runs once for both tests below (the client's start-up
    is the slow part)."""
    return run_scenario(cluster, "pp_stop_union.py")


def test_stop_and_start_pipeline_with_python_pachyderm(stop_union: dict[str, object]) -> None:
    seen = stop_union["stop_start"]
    assert seen == {
        "stopped": "PIPELINE_PAUSED",
        "provenance_stopped": [],  # no output commit, no job while stopped
        "flushed_stopped": 0,
        "jobs_stopped": 1,
        "provenance_started": ["pp_held"],
        "flushed_started": 1,  # start: one output commit over the current input
        "jobs_started": ["JOB_SUCCESS", "JOB_SUCCESS"],
        "output": "3\n",
    }


def test_union_members_sharing_a_name_with_python_pachyderm(
    stop_union: dict[str, object],
) -> None:
    seen = stop_union["union"]
    assert isinstance(seen, dict)
    u1, u2 = seen.pop("heads")
    assert seen == {
        "job": ["JOB_SUCCESS", 4],
        "datum_ids": 4,  # /a of both members: two datums
        "output": {"/a": "aa", "/a.c": f"{u1}\n{u2}\n", "/b": "b", "/c.c": f"{u2}\n"},
    }
