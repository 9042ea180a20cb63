"""pps.DatumsProcessed v1 -> v2: the upcaster moves each input file's path
and hash into ``inputs`` and keeps every other field; the pps registry reads
a stored v1 payload as v2 (and a v2 payload as itself); the jobs view built
from an upcast v1 event answers what the v1 code answered."""

from __future__ import annotations

import pytest

from libs.api.events import pps_pb2 as ev
from libs.api.pps import pps_pb2 as pps
from libs.errors import InvalidArgument, MalformedMessage
from libs.events import EventRegistry
from services.pps.adapters import jobs_view
from services.pps.app.jobs import datum_info
from services.pps.domain.events import registry
from services.pps.domain.upcasters import add_upcasters, datums_processed_v1_to_v2


def v1_event() -> ev.DatumsProcessedV1:
    ok = ev.DatumResultV1(
        id="d0",
        index=0,
        state=pps.SUCCESS,
        output_tree="t" * 64,
        reason="",
        tries=1,
        data=[
            pps.InputFile(path="/a", hash=bytes.fromhex("aa01")),
            pps.InputFile(path="/x/y", hash=bytes.fromhex("bb02")),
        ],
        stats_tree="s" * 64,
    )
    ok.stats.download_bytes = 7
    ok.stats.process_time.FromNanoseconds(1_500_000)
    failed = ev.DatumResultV1(
        id="d1",
        index=1,
        state=pps.FAILED,
        reason="datum d1 failed: user code exited with code 1",
        tries=3,
        data=[pps.InputFile(path="/b", hash=b"\xcc")],
    )
    return ev.DatumsProcessedV1(chunk=4, worker_id="w-1", results=[ok, failed])


def test_upcaster_moves_paths_and_hashes_into_inputs() -> None:
    old = v1_event()
    new = datums_processed_v1_to_v2(old)
    assert isinstance(new, ev.DatumsProcessed)
    assert (new.chunk, new.worker_id, len(new.results)) == (4, "w-1", 2)
    first, second = new.results
    assert [(f.name, f.repo, f.commit, f.path, f.hash) for f in first.inputs] == [
        ("", "", "", "/a", bytes.fromhex("aa01")),
        ("", "", "", "/x/y", bytes.fromhex("bb02")),
    ]
    assert (first.id, first.index, first.state, first.output_tree, first.tries) == (
        "d0",
        0,
        pps.SUCCESS,
        "t" * 64,
        1,
    )
    assert first.stats_tree == "s" * 64
    assert first.stats == old.results[0].stats
    assert not second.HasField("stats")
    assert (second.state, second.reason, second.tries) == (pps.FAILED, old.results[1].reason, 3)
    assert [(f.path, f.hash) for f in second.inputs] == [("/b", b"\xcc")]


def test_upcaster_refuses_another_message() -> None:
    with pytest.raises(InvalidArgument, match="DatumsProcessedV1"):
        datums_processed_v1_to_v2(ev.JobRestarted())


def test_registry_reads_a_v1_payload_as_v2() -> None:
    reg = registry()
    assert reg.current("pps.DatumsProcessed").version == 2
    assert reg.current("pps.DatumsProcessed").message is ev.DatumsProcessed
    old = v1_event()
    got = reg.decode("pps.DatumsProcessed", 1, old.SerializeToString())
    assert got == datums_processed_v1_to_v2(old)
    # the v1 bytes read as v2 directly would lose the inputs: field 8 is reserved
    assert not ev.DatumsProcessed.FromString(old.SerializeToString()).results[0].inputs


def test_registry_reads_a_v2_payload_as_is() -> None:
    new = ev.DatumsProcessed(
        chunk=1,
        results=[
            ev.DatumResult(
                id="d",
                inputs=[ev.DatumFile(name="in", repo="r", commit="c" * 32, path="/p", hash=b"h")],
            )
        ],
    )
    assert registry().decode("pps.DatumsProcessed", 2, new.SerializeToString()) == new


def test_without_the_upcaster_a_v1_payload_is_refused() -> None:
    reg = EventRegistry()
    reg.register_module(ev)
    with pytest.raises(MalformedMessage, match="no upcaster from v1 to v2"):
        reg.decode("pps.DatumsProcessed", 1, v1_event().SerializeToString())
    add_upcasters(reg)
    got = reg.decode("pps.DatumsProcessed", 1, v1_event().SerializeToString())
    assert isinstance(got, ev.DatumsProcessed) and got.results


def test_v1_datum_answers_path_and_hash_only_and_v2_names_repo_and_commit() -> None:
    upcast = datums_processed_v1_to_v2(v1_event()).results[0]
    doc = {"id": "d0", "state": pps.SUCCESS, "inputs": jobs_view.datum_files(upcast)}
    old = datum_info(doc, "job1")
    assert [(f.file.path, f.hash.hex(), f.file.HasField("commit")) for f in old.data] == [
        ("/a", "aa01", False),
        ("/x/y", "bb02", False),
    ]
    fresh = ev.DatumResult(
        id="d2",
        inputs=[ev.DatumFile(name="in", repo="images", commit="c" * 32, path="/a", hash=b"\x01")],
    )
    doc = {"id": "d2", "state": pps.SUCCESS, "inputs": jobs_view.datum_files(fresh)}
    (f,) = datum_info(doc, "job1").data
    assert (f.file.commit.repo.name, f.file.commit.id, f.file.path, f.hash) == (
        "images",
        "c" * 32,
        "/a",
        b"\x01",
    )
    assert jobs_view.datum_paths(doc) == ["/a"]
