"""The event types pfs writes and reads (with their upcasters, once any
schema changes)."""

from __future__ import annotations

from libs.api.events import pfs_pb2
from libs.events.registry import EventRegistry


def registry() -> EventRegistry:
    reg = EventRegistry()
    reg.register_module(pfs_pb2)
    return reg
