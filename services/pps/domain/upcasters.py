"""pps's upcasters: old schema versions of its events lifted to the next one.

``services.pps.domain.events.registry()`` adds them; any other registry that
decodes pps events (a test, a tool) must call ``add_upcasters`` too. The
mechanism is ``libs.events.registry``'s; the migrations are pps's own.

- ``pps.DatumsProcessed`` v1 -> v2: v1's ``DatumResult.data`` held each input
  file as ``InputFile{path, hash}``; v2's ``inputs`` also name the input, its
  repo and commit. A v1 log does not know those, so they stay empty and the
  datum shows path and hash only, as the code that wrote it answered.
"""

from __future__ import annotations

from google.protobuf.message import Message

from libs.api.events import pps_pb2 as ev
from libs.errors import InvalidArgument
from libs.events.registry import EventRegistry

DATUMS_PROCESSED = "pps.DatumsProcessed"


def datum_result_v1_to_v2(old: ev.DatumResultV1) -> ev.DatumResult:
    """One v1 result as v2: every field kept, ``data`` moved to ``inputs``."""
    new = ev.DatumResult(
        id=old.id,
        index=old.index,
        state=old.state,
        output_tree=old.output_tree,
        reason=old.reason,
        tries=old.tries,
        stats_tree=old.stats_tree,
        inputs=[ev.DatumFile(path=f.path, hash=f.hash) for f in old.data],
    )
    if old.HasField("stats"):
        new.stats.CopyFrom(old.stats)
    return new


def datums_processed_v1_to_v2(msg: Message) -> ev.DatumsProcessed:
    """The registered upcaster of ``pps.DatumsProcessed`` v1."""
    if not isinstance(msg, ev.DatumsProcessedV1):
        raise InvalidArgument(
            f"the {DATUMS_PROCESSED} v1 upcaster got {type(msg).__name__}, not DatumsProcessedV1"
        )
    return ev.DatumsProcessed(
        chunk=msg.chunk,
        worker_id=msg.worker_id,
        results=[datum_result_v1_to_v2(r) for r in msg.results],
    )


def add_upcasters(registry: EventRegistry) -> EventRegistry:
    """Register the pps upcasters on ``registry`` (which must know pps's
    event messages, e.g. through ``register_module(pps_pb2)``)."""
    registry.add_upcaster(DATUMS_PROCESSED, 1, datums_processed_v1_to_v2)
    return registry


__all__ = [
    "DATUMS_PROCESSED",
    "add_upcasters",
    "datum_result_v1_to_v2",
    "datums_processed_v1_to_v2",
]
