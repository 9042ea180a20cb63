"""Event types, their schema versions, and the upcasters between versions.

A message is an event when its .proto gives it the ``pachevents.event_type``
and ``pachevents.schema_version`` options. Old versions stay in the .proto
files as their own messages (``RenamedV1``) so old logs can still be read;
an upcaster registered for ``(type, from_version)`` turns a message of that
version into one of the next version. Reading always yields the newest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from google.protobuf.message import DecodeError, Message

from libs.api.events import options_pb2
from libs.errors import InvalidArgument, MalformedMessage, UnknownEventType

Upcaster = Callable[[Message], Message]


@dataclass(frozen=True)
class EventSchema:
    event_type: str
    version: int
    message: type[Message]


def schema_of(descriptor: Any) -> tuple[str, int] | None:
    """The (event type, schema version) a message declares, or None."""
    opts = descriptor.GetOptions()
    if not opts.HasExtension(options_pb2.event_type):
        return None
    return opts.Extensions[options_pb2.event_type], opts.Extensions[options_pb2.schema_version]


class EventRegistry:
    def __init__(self) -> None:
        self._schemas: dict[tuple[str, int], EventSchema] = {}
        self._current: dict[str, EventSchema] = {}
        self._by_message: dict[str, EventSchema] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    # --- registration ------------------------------------------------------

    def register(self, message: type[Message]) -> EventSchema:
        found = schema_of(message.DESCRIPTOR)
        if found is None:
            raise InvalidArgument(
                f"{message.DESCRIPTOR.full_name} has no pachevents.event_type option",
                event_message=message.DESCRIPTOR.full_name,
            )
        event_type, version = found
        if version < 1:
            raise InvalidArgument(f"{event_type} must have schema_version >= 1")
        schema = EventSchema(event_type, version, message)
        existing = self._schemas.get((event_type, version))
        if existing is not None and existing.message is not message:
            raise InvalidArgument(f"{event_type} v{version} is registered twice")
        self._schemas[(event_type, version)] = schema
        self._by_message[message.DESCRIPTOR.full_name] = schema
        current = self._current.get(event_type)
        if current is None or current.version < version:
            self._current[event_type] = schema
        return schema

    def register_module(self, module: ModuleType) -> list[EventSchema]:
        """Register every event message a generated ``*_pb2`` module defines."""
        out = []
        file_desc = module.DESCRIPTOR
        for name in file_desc.message_types_by_name:
            cls = getattr(module, name)
            if schema_of(cls.DESCRIPTOR) is not None:
                out.append(self.register(cls))
        return out

    def upcaster(self, event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorator: ``@registry.upcaster("testing.Renamed", 1)``."""

        def register(fn: Upcaster) -> Upcaster:
            self.add_upcaster(event_type, from_version, fn)
            return fn

        return register

    def add_upcaster(self, event_type: str, from_version: int, fn: Upcaster) -> None:
        if (event_type, from_version) in self._upcasters:
            raise InvalidArgument(f"an upcaster for {event_type} v{from_version} exists already")
        self._upcasters[(event_type, from_version)] = fn

    # --- lookups -----------------------------------------------------------

    def types(self) -> Iterable[str]:
        return self._current.keys()

    def current(self, event_type: str) -> EventSchema:
        try:
            return self._current[event_type]
        except KeyError:
            raise UnknownEventType(event_type) from None

    def schema_for(self, message: Message) -> EventSchema:
        try:
            return self._by_message[message.DESCRIPTOR.full_name]
        except KeyError:
            raise UnknownEventType(message.DESCRIPTOR.full_name) from None

    def knows(self, event_type: str) -> bool:
        return event_type in self._current

    # --- decoding ----------------------------------------------------------

    def decode(self, event_type: str, version: int, payload: bytes) -> Message:
        """Parse a stored payload and lift it to the current schema version."""
        current = self.current(event_type)
        if version > current.version:
            raise MalformedMessage(
                f"{event_type} event",
                f"schema v{version} is newer than this code knows (v{current.version})",
            )
        schema = self._schemas.get((event_type, version))
        if schema is None:
            raise MalformedMessage(f"{event_type} event", f"unknown schema version v{version}")
        msg = schema.message()
        try:
            msg.ParseFromString(payload)
        except DecodeError as exc:
            raise MalformedMessage(f"{event_type} v{version} payload", str(exc)) from None
        return self.upcast(event_type, version, msg)

    def upcast(self, event_type: str, version: int, msg: Message) -> Message:
        current = self.current(event_type).version
        while version < current:
            fn = self._upcasters.get((event_type, version))
            if fn is None:
                raise MalformedMessage(
                    f"{event_type} event", f"no upcaster from v{version} to v{version + 1}"
                )
            msg = fn(msg)
            version += 1
            expected = self._schemas.get((event_type, version))
            if expected is not None and not isinstance(msg, expected.message):
                raise InvalidArgument(
                    f"upcaster {event_type} v{version - 1} returned "
                    f"{type(msg).__name__}, not {expected.message.__name__}"
                )
        return msg
