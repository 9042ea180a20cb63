"""Pachyderm's beginner tutorial, end to end through pachctl: an `images`
repo, the `edges` pipeline (OpenCV edge detection in Python, run in
bubblewrap), the `montage` pipeline crossing both; then more images, and
only the new ones are processed. The same steps are in the README."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.integration.test_pachctl_files import ok, pachctl
from tests.support.cluster import ROOT, Cluster, running

TUTORIAL = ROOT / "docs" / "tutorial"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from running(Path(tmp_path_factory.mktemp("tutorial")) / "data")


def sample_images(out: Path, first: int, count: int) -> list[Path]:
    script = str(TUTORIAL / "sample_images.py")
    args = [str(out), "--first", str(first), "--count", str(count)]
    subprocess.run([sys.executable, script, *args], check=True)
    return [out / f"sample-{i}.png" for i in range(first, first + count)]


def put_images(cluster: Cluster, images: list[Path]) -> None:
    """One commit with every image, as the tutorial's put-file does."""
    ok(pachctl(cluster, "start-commit", "images", "master"))
    for image in images:
        ok(pachctl(cluster, "put-file", "images", "master", image.name, "-f", str(image)))
    ok(pachctl(cluster, "finish-commit", "images", "master"))


def job_rows(cluster: Cluster, pipeline: str) -> list[str]:
    table = ok(pachctl(cluster, "list-job", "-p", pipeline)).decode().splitlines()
    assert table[0].split()[:3] == ["ID", "OUTPUT", "COMMIT"], table
    return table[1:]


def decode(png: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert img is not None
    return img


def test_beginner_tutorial(cluster: Cluster, tmp_path: Path) -> None:
    ok(pachctl(cluster, "create-repo", "images"))
    first = sample_images(tmp_path / "a", 1, 3)
    put_images(cluster, first)

    ok(pachctl(cluster, "create-pipeline", "-f", str(TUTORIAL / "edges.json")))
    ok(pachctl(cluster, "create-pipeline", "-f", str(TUTORIAL / "montage.json")))
    ok(pachctl(cluster, "flush-commit", "images/master"))

    pipelines = ok(pachctl(cluster, "list-pipeline")).decode()
    assert re.search(r"^edges\s", pipelines, re.M) and re.search(r"^montage\s", pipelines, re.M)
    [edges_job] = job_rows(cluster, "edges")
    assert "success" in edges_job and "3 + 0 / 3" in edges_job, edges_job
    [montage_job] = job_rows(cluster, "montage")
    assert "success" in montage_job and "1 + 0 / 1" in montage_job, montage_job

    # The edges are OpenCV's Canny edges of each image.
    listed = ok(pachctl(cluster, "list-file", "edges", "master")).decode()
    assert sorted(re.findall(r"sample-\d\.png", listed)) == [p.name for p in first]
    edge_1 = ok(pachctl(cluster, "get-file", "edges", "master", "sample-1.png"))
    gray = cv2.imread(str(first[0]), cv2.IMREAD_GRAYSCALE)
    assert gray is not None
    expected = cv2.Canny(gray, 100, 200)
    assert np.array_equal(decode(edge_1), expected)
    # The montage tiles 3 images + 3 edge pictures, 4 to a row of 150 px tiles.
    montage = decode(ok(pachctl(cluster, "get-file", "montage", "master", "montage.png")))
    assert montage.shape[:2] == (300, 600)

    # More images: the next edges job processes only the new ones.
    more = sample_images(tmp_path / "b", 4, 2)
    put_images(cluster, more)
    ok(pachctl(cluster, "flush-commit", "images/master"))
    rows = job_rows(cluster, "edges")
    assert len(rows) == 2
    assert "success" in rows[0] and "2 + 3 / 5" in rows[0], rows[0]
    listed = ok(pachctl(cluster, "list-file", "edges", "master")).decode()
    assert len(re.findall(r"sample-\d\.png", listed)) == 5
    # The skipped datums' outputs are reused unchanged.
    assert ok(pachctl(cluster, "get-file", "edges", "master", "sample-1.png")) == edge_1
    rows = job_rows(cluster, "montage")
    assert len(rows) == 2 and "success" in rows[0]
    montage = decode(ok(pachctl(cluster, "get-file", "montage", "master", "montage.png")))
    assert montage.shape[:2] == (450, 600)  # 10 pictures: 3 rows of 4

    # The output commits' provenance names the input commit.
    inspected = ok(pachctl(cluster, "inspect-commit", "edges", "master")).decode()
    assert "images" in inspected
