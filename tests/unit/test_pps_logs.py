"""The pps log store (PPS_LOGS) on a real nats-server."""

from __future__ import annotations

import base64
import contextlib
import time

import nats
import pytest
from nats.aio.client import Client

from libs.api.pps import pps_pb2
from libs.errors import InvalidArgument, Unavailable
from programs.cluster.natsserver import NatsServer
from services.pps.adapters.logs import (
    MAX_PENDING,
    STREAM,
    LogStore,
    filter_subject,
    match_datum,
    subject,
)


def _line(
    text: str,
    pipeline: str = "edges",
    job: str = "j1",
    datum: str = "",
    master: bool = False,
    data: tuple[tuple[str, bytes], ...] = (),
    user: bool | None = None,
) -> pps_pb2.LogMessage:
    return pps_pb2.LogMessage(
        pipeline_name=pipeline,
        job_id=job,
        datum_id=datum,
        master=master,
        message=text,
        user=not master if user is None else user,
        data=[pps_pb2.InputFile(path=p, hash=h) for p, h in data],
    )


def _req(**kw: object) -> pps_pb2.GetLogsRequest:
    req = pps_pb2.GetLogsRequest()
    if "pipeline" in kw:
        req.pipeline.name = str(kw.pop("pipeline"))
    if "job" in kw:
        req.job.id = str(kw.pop("job"))
    if "datum" in kw:
        req.datum.id = str(kw.pop("datum"))
    for k, v in kw.items():
        if isinstance(v, list):
            getattr(req, k).extend(v)
        else:
            setattr(req, k, v)
    return req


@pytest.fixture
async def logs(nc: Client) -> LogStore:
    store = LogStore(nc.jetstream())
    await store.ensure()
    await store.ensure()  # idempotent
    return store


async def _texts(store: LogStore, req: pps_pb2.GetLogsRequest, **kw: int) -> list[str]:
    return [m.message for m in (await store.page(req, **kw)).messages]


async def test_filters_as_pachyderm(logs: LogStore) -> None:
    h = bytes.fromhex("ab" * 32)
    for line in [
        _line("a1", datum="d1", data=(("/x.png", h),)),
        _line("a2", datum="d2", data=(("/y.png", b"\x01"),)),
        _line("m", master=True),
        _line("b1", job="j2"),
        _line("other", pipeline="montage"),
        _line("nojob", job=""),
    ]:
        await logs.append(line)
    await logs.flush()
    assert logs.dropped == 0
    assert await _texts(logs, _req(pipeline="edges")) == ["a1", "a2", "b1", "nojob"]
    assert await _texts(logs, _req(pipeline="edges", master=True)) == ["m"]
    assert await _texts(logs, _req(job="j2")) == ["b1"]
    assert await _texts(logs, _req(pipeline="edges", job="j1")) == ["a1", "a2"]
    assert await _texts(logs, _req(pipeline="edges", datum="d2")) == ["a2"]
    for f in ("/x.png", "ab" * 32, base64.b64encode(h).decode()):
        assert await _texts(logs, _req(pipeline="edges", data_filters=[f])) == ["a1"]
    assert await _texts(logs, _req(pipeline="edges", data_filters=["/x.png", "/y.png"])) == []
    assert await _texts(logs, _req()) == ["a1", "a2", "b1", "other", "nojob"]


async def test_pages_follow_and_tail(logs: LogStore) -> None:
    for i in range(10):
        await logs.append(_line(f"l{i}"))
        await logs.append(_line("noise", pipeline="montage"))
    await logs.flush()
    req = _req(pipeline="edges")
    first = await logs.page(req, after=0, limit=4)
    assert [m.message for m in first.messages] == ["l0", "l1", "l2", "l3"]
    second = await logs.page(req, after=first.next, limit=100)
    assert [m.message for m in second.messages] == [f"l{i}" for i in range(4, 10)]
    empty = await logs.page(req, after=second.next)
    assert list(empty.messages) == [] and empty.next == second.next
    await logs.append(_line("late"))
    await logs.flush()
    assert [m.message for m in (await logs.page(req, after=empty.next)).messages] == ["late"]

    tail = _req(pipeline="edges", tail=3)
    page = await logs.page(tail, after=0, limit=2)
    assert [m.message for m in page.messages] == ["l8", "l9"]
    rest = await logs.page(tail, after=page.next, limit=2)
    assert [m.message for m in rest.messages] == ["late"]
    # The tail counts the lines pachctl shows (user code's, not the worker's
    # own) and a tailed read returns just those: tail N answers N lines.
    await logs.append(_line("worker says", user=False))
    await logs.flush()
    shown_tail = await logs.page(_req(pipeline="edges", tail=2), after=0)
    assert [m.message for m in shown_tail.messages] == ["l9", "late"]
    none = await logs.page(_req(pipeline="nothing", tail=5))
    assert list(none.messages) == [] and none.next > 0  # a follow starts at the end
    info = await logs._js.stream_info(STREAM)
    assert info.config.max_age == 7 * 24 * 3600
    assert len(await logs._js.consumers_info(STREAM)) == 0  # scans leave nothing behind


def test_subjects_and_matching() -> None:
    assert subject("edges", "j1") == "pps.logs.edges.j1"
    assert subject("edges", "") == "pps.logs.edges.-"
    assert filter_subject(_req(job="j1")) == "pps.logs.*.j1"
    assert filter_subject(_req(pipeline="p")) == "pps.logs.p.>"
    with pytest.raises(InvalidArgument, match="pipeline name"):
        filter_subject(_req(pipeline="a>b"))
    assert match_datum([], [])
    assert not match_datum(["/a"], [])


async def test_nats_away_drops_lines_instead_of_waiting(nats_server: NatsServer) -> None:
    client = await nats.connect(nats_server.url, max_reconnect_attempts=-1)
    try:
        store = LogStore(client.jetstream())
        await store.ensure()
        nats_server.stop()
        started = time.monotonic()
        for i in range(MAX_PENDING + 50):
            with contextlib.suppress(Unavailable):
                await store.append(_line(f"l{i}"))
        assert time.monotonic() - started < 10
        assert store.dropped >= 50
    finally:
        with contextlib.suppress(Exception):
            await client.close()
