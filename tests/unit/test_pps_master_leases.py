"""A pipeline master and a lease store that does not answer (a NATS node
failing over): the master retries instead of dying, and a master that ends
anyway wakes the supervisor at once."""

from __future__ import annotations

import asyncio
from typing import Any

import nats.errors

from services.pps.app.master import Master, PipelineMaster


class FlakyLeases:
    """Raises ``failures`` times (as nats-py does while no node answers), then holds."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self.ttl = 20.0

    async def hold(self, name: str) -> bool:
        self.calls += 1
        if self.calls <= self.failures:
            raise nats.errors.NoRespondersError if self.calls % 2 else TimeoutError()
        return True


def _master() -> PipelineMaster:
    nothing: Any = None  # _hold touches neither the deps nor the pool
    return PipelineMaster(deps=nothing, name="edges", pool=nothing)


async def test_an_unanswered_lease_is_retried_not_fatal() -> None:
    leases = FlakyLeases(failures=2)
    held = await asyncio.wait_for(_master()._hold(leases), 10)  # type: ignore[arg-type]
    assert held is True
    assert leases.calls == 3


async def test_a_master_that_ends_wakes_the_supervisor() -> None:
    nothing: Any = None
    supervisor = Master(deps=nothing, nc=nothing)

    async def dies() -> None:
        raise TimeoutError("the lease store did not answer")

    task = asyncio.create_task(dies())
    task.add_done_callback(supervisor._master_ended)
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0)  # done callbacks run on the next loop turn
    assert supervisor._wake.is_set()
