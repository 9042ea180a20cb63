"""Waiting for the services' read models after a restore."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from libs.api.internal.service_pb2 import HealthRequest, HealthResponse
from libs.bus import Bus
from libs.errors import DeadlineExceeded, PachError


async def wait_applied(
    bus: Bus,
    seq: int,
    services: Sequence[str] = ("pfs", "pps"),
    timeout: float = 300.0,
    poll: float = 0.2,
) -> None:
    """Return once every service in ``services`` reports (``qry.<svc>.Health``,
    ``applied_seq``) that its read models applied the event log up to ``seq``.

    Limitation: with several replicas of a service, each poll reaches one
    replica of the queue group; this returns once *a* replica of each service
    reports ``seq``, not every replica.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pending = list(services)
    seen: dict[str, str] = {}
    while pending:
        svc = pending[0]
        try:
            reply = await bus.request(
                svc,
                "Health",
                HealthRequest(),
                HealthResponse,
                kind="qry",
                timeout=max(0.1, min(5.0, deadline - loop.time())),
            )
            if reply.applied_seq >= seq:
                pending.pop(0)
                continue
            seen[svc] = f"at {reply.applied_seq}"
        except PachError as err:
            seen[svc] = f"not answering ({err})"
        if loop.time() >= deadline:
            raise DeadlineExceeded(
                f"{svc} did not apply the event log up to sequence {seq} within "
                f"{timeout:g}s ({seen[svc]})",
                service=svc,
                seq=seq,
            )
        await asyncio.sleep(poll)
