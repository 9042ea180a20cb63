"""The in-memory parts of pfs's put sessions: the queue per branch, the
lease table and the settings (the commands run through the real cluster in
tests/integration/test_put_sessions.py)."""

from __future__ import annotations

import asyncio
import time

import pytest

from libs.errors import InvalidArgument
from services.pfs.app.put_sessions import BranchQueue, Leases, PutSettings


async def test_the_queue_serves_sessions_in_arrival_order_and_keeps_a_place() -> None:
    q = BranchQueue(stale_s=60)
    for s in ("a", "b", "c"):
        q.join(s)
    q.join("a")  # asking again keeps its place
    assert q.first() == "a"
    q.leave("a")
    assert q.first() == "b" and len(q) == 2
    q.leave("missing")  # leaving twice is harmless
    assert q.first() == "b"


async def test_a_session_that_stopped_asking_loses_its_place() -> None:
    q = BranchQueue(stale_s=0.05)
    q.join("gone")
    await asyncio.sleep(0.1)
    q.join("here")
    assert q.first() == "here" and len(q) == 1


async def test_waiters_wake_when_the_branch_changes_else_time_out() -> None:
    q = BranchQueue(stale_s=60)
    start = time.monotonic()
    await q.changed(0.05)
    assert time.monotonic() - start >= 0.04
    waiter = asyncio.ensure_future(q.changed(5))
    await asyncio.sleep(0.01)
    q.wake()
    await asyncio.wait_for(waiter, 1)


def test_leases_lapse_unless_renewed_and_remember_their_branch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]  # a clock of the test's own: a loaded machine cannot skew it
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    leases = Leases(lease_s=0.05)
    leases.renew("r", "c1", "s1", "master")
    leases.renew("r", "c2", "s2")
    now[0] += 0.03
    leases.renew("r", "c1", "s1")  # renewed: lives on, keeps its branch
    now[0] += 0.03
    assert [(r, c, held.session) for r, c, held in leases.lapsed()] == [("r", "c2", "s2")]
    assert leases.knows("r", "c1")
    assert leases.drop("r", "c1") == "master"
    assert leases.drop("r", "c1") == "" and not leases.knows("r", "c1")


def test_settings_come_from_the_environment_in_ms() -> None:
    assert PutSettings.from_env({}) == PutSettings(10.0, 2.0)
    got = PutSettings.from_env({"PACH_PUT_LEASE_MS": "3000", "PACH_PUT_HOLD_MS": "500"})
    assert got == PutSettings(3.0, 0.5)
    for bad in ("0", "-1", "ten", "1.5"):
        with pytest.raises(InvalidArgument, match="PACH_PUT_LEASE_MS must be"):
            PutSettings.from_env({"PACH_PUT_LEASE_MS": bad})


def test_a_lease_names_the_session_that_renewed_it_last() -> None:
    leases = Leases(lease_s=10)
    leases.renew("r", "c1", "s1", "master")
    assert leases.holds("r", "c1", "s1") and not leases.holds("r", "c1", "s2")
    leases.renew("r", "c1", "s2")  # a renewal from another session re-keys it
    assert leases.holds("r", "c1", "s2") and not leases.holds("r", "c2", "s2")
