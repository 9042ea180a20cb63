"""The event types enterprise writes and reads."""

from __future__ import annotations

from libs.api.events import enterprise_pb2
from libs.events.registry import EventRegistry


def registry() -> EventRegistry:
    reg = EventRegistry()
    reg.register_module(enterprise_pb2)
    return reg
