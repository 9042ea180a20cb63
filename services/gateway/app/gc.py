"""Garbage collection for ``pps.API``'s ``GarbageCollect``: pfs collects
(``cmd.pfs.GarbageCollect``), and what it kept, deleted and protected is the
answer (gRPC carries it in trailing metadata, HTTP as the reply)."""

from __future__ import annotations

from libs.api.internal import gc_pb2
from libs.api.pps import pps_pb2 as pps
from libs.errors import InvalidArgument
from services.gateway.principal import Ask


async def garbage_collect(
    ask: Ask, request: pps.GarbageCollectRequest
) -> gc_pb2.GarbageCollectResult:
    """Collect garbage (pfs's ``cmd.pfs.GarbageCollect``); ``ask`` calls pfs."""
    if request.memory_bytes < 0:
        raise InvalidArgument(
            f"garbage collection memory must be >= 0 bytes, got {request.memory_bytes}"
        )
    req = gc_pb2.GarbageCollectRequest(memory_bytes=request.memory_bytes)
    return await ask("GarbageCollect", req, gc_pb2.GarbageCollectResult, "cmd")
