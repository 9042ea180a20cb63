"""The event types auth writes and reads."""

from __future__ import annotations

from libs.api.events import auth_pb2
from libs.events.registry import EventRegistry


def registry() -> EventRegistry:
    reg = EventRegistry()
    reg.register_module(auth_pb2)
    return reg
