"""The restore status record and the ReactionGate's floors/admit logic
(the KV bucket replaced by an in-memory fake; the real bucket is covered in
tests/integration/test_reaction_gate.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from libs.errors import InvalidArgument
from libs.restore_gate import DONE, RUNNING, ReactionGate, RestoreStatus
from services.admin.adapters.cluster_state import ClusterState


def _status(state: str = DONE, last_seq: int = 10, **floors: int) -> RestoreStatus:
    return RestoreStatus(
        restore_id="r1",
        state=state,
        last_seq=last_seq,
        reaction_floors=dict(floors),
        started=1.0,
        finished=2.0 if state == DONE else 0.0,
    )


@dataclass
class FakeWatcher:
    updates: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)

    def __aiter__(self) -> FakeWatcher:
        return self

    async def __anext__(self) -> Any:
        return await self.updates.get()

    async def stop(self) -> None:
        return None


@dataclass
class FakeState:
    """What ReactionGate uses of ClusterState: restore_status, kv.watch and
    js.stream_info."""

    current: RestoreStatus | None = None
    last_seq: int = 0
    reads: int = 0
    watcher: FakeWatcher = field(default_factory=FakeWatcher)

    def __post_init__(self) -> None:
        async def watch(key: str) -> FakeWatcher:
            assert key == "restore"
            return self.watcher

        async def stream_info(name: str) -> Any:
            return SimpleNamespace(state=SimpleNamespace(last_seq=self.last_seq))

        self.kv = SimpleNamespace(watch=watch)
        self.js = SimpleNamespace(stream_info=stream_info)

    async def restore_status(self) -> RestoreStatus | None:
        self.reads += 1
        return self.current

    def push(self, status: RestoreStatus | None) -> None:
        """A KV update as the watch delivers it."""
        self.current = status
        if status is None:
            entry = SimpleNamespace(operation="DEL", value=b"")
        else:
            entry = SimpleNamespace(operation=None, value=status.to_json())
        self.watcher.updates.put_nowait(entry)


@contextlib.asynccontextmanager
async def _gate(state: FakeState, **kw: Any) -> AsyncIterator[ReactionGate]:
    gate = ReactionGate(state, **kw)  # type: ignore[arg-type]
    await gate.start()
    try:
        yield gate
    finally:
        await gate.stop()


def test_restore_status_round_trips_through_json() -> None:
    status = _status(RUNNING, 42, react=7)
    assert RestoreStatus.from_json(status.to_json()) == status
    assert status.running


def test_floor_of_a_reaction_the_restore_does_not_name_is_last_seq() -> None:
    status = _status(last_seq=10, named=4)
    assert status.floor("named") == 4
    assert status.floor("unnamed") == 10


@pytest.mark.parametrize(
    "data",
    [b"not json", b"{}", b'{"id": "x", "state": "paused", "last_seq": 1}', b"[1]"],
)
def test_a_bad_restore_record_is_invalid_argument(data: bytes) -> None:
    with pytest.raises(InvalidArgument, match="restore"):
        RestoreStatus.from_json(data)


async def test_begin_restore_refuses_floors_beyond_last_seq() -> None:
    state = ClusterState(js=None, kv=None)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=r"0\.\.5"):
        await state.begin_restore("r", 5, {"react": 6})
    with pytest.raises(InvalidArgument, match="id"):
        await state.begin_restore("", 5, {})


async def test_without_a_restore_every_event_is_admitted_and_settles() -> None:
    state = FakeState(last_seq=3)
    async with _gate(state) as gate:
        assert await gate.admit("react", 1)
        reads = state.reads
        for seq in range(2, 50):
            assert await gate.admit("react", seq)
        assert state.reads == reads  # settled: no more KV reads per event
        assert gate.skipped == 0


async def test_an_empty_log_does_not_settle_the_gate() -> None:
    state = FakeState(last_seq=0)
    async with _gate(state) as gate:
        await gate.wait_open()
        await gate.wait_open()
        # each look asks again: a restore may still begin into an empty log
        assert state.reads == 3  # start + two confirmations


async def test_a_restore_the_watch_has_not_delivered_yet_is_still_seen() -> None:
    state = FakeState(last_seq=0)
    async with _gate(state) as gate:
        state.current = _status(RUNNING, 5)  # written, not yet delivered by the watch
        state.last_seq = 1
        admitted = asyncio.create_task(gate.admit("react", 1))
        await asyncio.sleep(0.05)
        assert not admitted.done()
        state.push(_status(DONE, 5, react=0))
        assert await asyncio.wait_for(admitted, 2)


async def test_after_a_restore_only_events_above_the_floor_are_admitted() -> None:
    state = FakeState(current=_status(DONE, 10, named=4), last_seq=12)
    async with _gate(state) as gate:
        assert [s for s in range(1, 13) if await gate.admit("named", s)] == [
            5,
            6,
            7,
            8,
            9,
            10,
            11,
            12,
        ]
        assert [s for s in range(1, 13) if await gate.admit("unnamed", s)] == [11, 12]
        assert gate.skipped == 4 + 10


async def test_admit_waits_while_a_restore_runs() -> None:
    state = FakeState(current=_status(RUNNING, 10, react=3), last_seq=10)
    async with _gate(state) as gate:
        first = asyncio.create_task(gate.admit("react", 2))
        later = asyncio.create_task(gate.admit("react", 8))
        opened = asyncio.create_task(gate.wait_open())
        await asyncio.sleep(0.1)
        assert not (first.done() or later.done() or opened.done())
        state.push(_status(DONE, 10, react=3))
        assert await asyncio.wait_for(first, 2) is False
        assert await asyncio.wait_for(later, 2) is True
        await asyncio.wait_for(opened, 2)


async def test_after_a_restore_the_gate_waits_for_the_read_models() -> None:
    applied = [0]
    state = FakeState(current=_status(DONE, 10), last_seq=10)
    async with _gate(state, applied=lambda: applied[0], poll=0.01) as gate:
        opened = asyncio.create_task(gate.wait_open())
        await asyncio.sleep(0.05)
        assert not opened.done()
        applied[0] = 9
        await asyncio.sleep(0.05)
        assert not opened.done()
        applied[0] = 10
        await asyncio.wait_for(opened, 2)
        applied[0] = 0  # once caught up, the gate does not look again
        await asyncio.wait_for(gate.wait_open(), 0.5)


async def test_an_abandoned_restore_opens_the_gate() -> None:
    state = FakeState(current=_status(RUNNING, 10), last_seq=0)
    async with _gate(state) as gate:
        opened = asyncio.create_task(gate.wait_open())
        await asyncio.sleep(0.05)
        assert not opened.done()
        state.push(None)
        await asyncio.wait_for(opened, 2)
        assert gate.status is None
