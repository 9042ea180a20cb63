"""The event types pps writes and reads: pipeline events
(``ev.pps.pipeline.<name>``) and job events (``ev.pps.job.<id>``), with their
upcasters (``services.pps.domain.upcasters``)."""

from __future__ import annotations

from libs.api.events import pps_pb2
from libs.events.registry import EventRegistry
from services.pps.domain.upcasters import add_upcasters


def registry() -> EventRegistry:
    reg = EventRegistry()
    reg.register_module(pps_pb2)
    return add_upcasters(reg)
