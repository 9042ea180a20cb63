"""What an extract's header says about the event types it holds."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf.descriptor_pb2 import FileDescriptorProto, FileDescriptorSet

from libs.api.events import envelope_pb2
from libs.api.internal.backup_pb2 import EventTypeVersion
from libs.events.registry import EventRegistry


def event_types(registry: EventRegistry) -> list[EventTypeVersion]:
    """Every event type the registry knows, at its current schema version."""
    return [
        EventTypeVersion(type=t, schema_version=registry.current(t).version)
        for t in sorted(registry.types())
    ]


def event_schemas(registry: EventRegistry) -> FileDescriptorSet:
    """The .proto files of the event messages and the envelope, with every
    file they import, dependencies first (what protoc's
    ``--include_imports`` writes)."""
    roots: list[Any] = [envelope_pb2.DESCRIPTOR]
    roots.extend(registry.current(t).message.DESCRIPTOR.file for t in sorted(registry.types()))
    out = FileDescriptorSet()
    seen: set[str] = set()
    for root in roots:
        _add(root, seen, out)
    return out


def _add(file: Any, seen: set[str], out: FileDescriptorSet) -> None:
    if file.name in seen:
        return
    seen.add(file.name)
    deps: Iterable[Any] = file.dependencies
    for dep in deps:
        _add(dep, seen, out)
    proto = FileDescriptorProto()
    file.CopyToProto(proto)
    out.file.append(proto)
