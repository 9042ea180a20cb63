"""Every event type the cluster writes, at every schema version it knows:
what an extract's header lists and what a restore checks the extract
against. Admin never decodes a payload (stored batches travel verbatim),
so no upcaster is needed here; each service registers its own upcasters
in its own registry (e.g. ``services/pps/domain/upcasters.py``)."""

from __future__ import annotations

from libs.api.events import auth_pb2, enterprise_pb2, pfs_pb2, pps_pb2
from libs.events.registry import EventRegistry


def cluster_registry() -> EventRegistry:
    reg = EventRegistry()
    reg.register_module(pfs_pb2)
    reg.register_module(pps_pb2)
    reg.register_module(auth_pb2)
    reg.register_module(enterprise_pb2)
    return reg
