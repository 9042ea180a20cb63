"""Old logs restore and serve the same answers on new code.

For each golden extract (``tests/golden/extract-v<N>.pachext``, made by the
code of schema version N with ``tests/golden/make_golden.py``): a new cluster
on the current code restores it and answers every recorded question
(``answers-v<N>.json``: ListJob, InspectJob, ListDatum, InspectDatum, the
output files) exactly as the code that wrote it did — for v1 datums that is
path and hash only, for v2 datums also the input's repo and commit. A v1
cluster restarted with its pps read models deleted rebuilds them from the log
through the upcaster and answers the same. The restored log is the extract's,
byte for byte: v1's DatumsProcessed still say schema version 1.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import nats
import pytest

from libs.api.admin import admin_pb2 as admin
from libs.api.admin import admin_pb2_grpc
from libs.api.events.envelope_pb2 import EventBatch
from libs.api.internal.backup_pb2 import ExtractRecord
from libs.extract_format import decode_frames
from tests.golden.make_golden import record_answers
from tests.support.cluster import Cluster, running

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
VERSIONS = sorted(int(p.stem.split("-v")[1]) for p in GOLDEN.glob("extract-v*.pachext"))
RESTORE_TIMEOUT_S = 120.0


def golden_answers(version: int) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((GOLDEN / f"answers-v{version}.json").read_text())
    return data


def extract_path(version: int) -> Path:
    return GOLDEN / f"extract-v{version}.pachext"


def restore(cluster: Cluster, extract: Path) -> None:
    """``admin.Restore`` of the extract file (by URL: a copy of it in the
    cluster's backup directory, the only place restore -u reads); returns
    once pfs and pps have applied the restored log."""
    backups = cluster.data_dir / "backups"
    backups.mkdir(parents=True, exist_ok=True)
    copy = backups / extract.name
    shutil.copyfile(extract, copy)
    with grpc.insecure_channel(cluster.state()["grpc_address"]) as channel:
        stub = admin_pb2_grpc.APIStub(channel)
        stub.Restore(iter([admin.RestoreRequest(URL=str(copy))]), timeout=RESTORE_TIMEOUT_S)


def answers_of(cluster: Cluster) -> dict[str, Any]:
    with grpc.insecure_channel(cluster.state()["grpc_address"]) as channel:
        return record_answers(channel)


def answers_when_ready(cluster: Cluster, expected: dict[str, Any], timeout: float = 60.0) -> Any:
    """The cluster's answers once they equal ``expected`` (its read models
    are being rebuilt), or the last ones after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = answers_of(cluster)
        except grpc.RpcError:
            got = None
        if got == expected or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


async def _records(path: Path) -> AsyncIterator[ExtractRecord]:
    async def chunks() -> AsyncIterator[bytes]:
        with path.open("rb") as f:
            while block := f.read(1 << 16):
                yield block

    async for record in decode_frames(chunks()):
        yield record


async def extract_events(path: Path) -> list[tuple[int, str, bytes]]:
    return [
        (r.events.seq, r.events.subject, r.events.batch)
        async for r in _records(path)
        if r.WhichOneof("record") == "events"
    ]


async def stored_events(cluster: Cluster) -> list[tuple[int, str, bytes]]:
    """Every message of the cluster's event log: (seq, subject, data)."""
    nc = await nats.connect(cluster.state()["nats"]["url"])
    try:
        js = nc.jetstream()
        info = await js.stream_info("EVENTS")
        out = []
        for seq in range(1, info.state.last_seq + 1):
            msg = await js.get_msg("EVENTS", seq)
            out.append((seq, msg.subject or "", msg.data or b""))
        return out
    finally:
        await nc.close()


def schema_versions(events: list[tuple[int, str, bytes]], event_type: str) -> list[int]:
    return [
        env.schema_version
        for _, _, data in events
        for env in EventBatch.FromString(data).events
        if env.type == event_type
    ]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    yield from running(tmp_path / "data")


def test_golden_extracts_exist() -> None:
    assert VERSIONS[:2] == [1, 2], f"golden extracts in {GOLDEN}: {VERSIONS}"
    for version in VERSIONS:
        assert extract_path(version).stat().st_size < 1 << 20
        assert (GOLDEN / f"answers-v{version}.json").exists()


@pytest.mark.parametrize("version", VERSIONS)
def test_golden_extract_restores_with_the_same_answers(cluster: Cluster, version: int) -> None:
    expected = golden_answers(version)
    restore(cluster, extract_path(version))
    got = answers_of(cluster)
    assert got == expected
    processed = [
        f["file"]
        for resp in got["list_datum"].values()
        for d in resp.get("datum_infos", [])
        if d.get("state", "FAILED") in ("SUCCESS", "FAILED")  # FAILED is 0: left out
        for f in d["data"]
    ]
    assert processed
    if version == 1:  # what the v1 code answered: no repo or commit
        assert all("commit" not in f for f in processed)
    else:
        assert all(f["commit"]["repo"]["name"] and f["commit"]["id"] for f in processed)
    # nothing ran again: as many jobs, each as finished as it was
    assert [j["job"]["id"] for j in got["list_job"]["job_info"]] == [
        j["job"]["id"] for j in expected["list_job"]["job_info"]
    ]


@pytest.mark.parametrize("version", VERSIONS)
def test_restored_events_are_verbatim(cluster: Cluster, version: int) -> None:
    restore(cluster, extract_path(version))
    extracted = asyncio.run(extract_events(extract_path(version)))
    stored = asyncio.run(stored_events(cluster))
    assert stored[: len(extracted)] == extracted
    versions = schema_versions(extracted, "pps.DatumsProcessed")
    assert versions and set(versions) == {version}


def test_v1_log_rebuilds_pps_read_models_through_the_upcaster(tmp_path: Path) -> None:
    expected = golden_answers(1)
    data_dir = tmp_path / "data"
    first = Cluster(data_dir).start()
    try:
        first.wait_ready(60)
        restore(first, extract_path(1))
        assert answers_of(first) == expected
        assert first.stop() == 0
    finally:
        first.kill()
    models = data_dir / "readmodels"
    dropped = sorted(p.name for p in models.glob("pps.sqlite*"))
    assert "pps.sqlite" in dropped
    for name in dropped:
        (models / name).unlink()
    second = Cluster(data_dir).start()
    try:
        second.wait_ready(60)
        assert answers_when_ready(second, expected) == expected
        assert (models / "pps.sqlite").exists()  # rebuilt
        stored = asyncio.run(stored_events(second))
        assert set(schema_versions(stored, "pps.DatumsProcessed")) == {1}
    finally:
        second.kill()
