"""Every event type of the cluster, with its upcasters, in one registry:
what extract and restore read and check (they carry every service's events).
A service's own registry (``services/<name>/domain/events.py``) holds its
part only."""

from __future__ import annotations

from libs.api.events import pfs_pb2, pps_pb2
from libs.events.registry import EventRegistry
from libs.events.upcasters import add_upcasters


def cluster_registry() -> EventRegistry:
    reg = EventRegistry()
    reg.register_module(pfs_pb2)
    reg.register_module(pps_pb2)
    return add_upcasters(reg)
