"""``google.protobuf.BytesValue`` on the wire without building messages.

GetFile answers a stream of ``BytesValue`` (Pachyderm 1.7's API). Building a
message per reply and serializing it copies every byte twice more than the
wire needs; a ``BytesValue`` is only field 1 (tag ``0x0a``), a varint length
and the bytes, so the gateway frames its blocks itself (one copy) and
pachctl takes the bytes out of a reply without a copy. The encoding is the
one protobuf writes: any protobuf client (python-pachyderm) reads the
frames, and ``payload`` reads anything a protobuf ``BytesValue`` may be.
"""

from __future__ import annotations

from google.protobuf.wrappers_pb2 import BytesValue

_TAG = 0x0A  # field 1, wire type 2 (length-delimited)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def frame(data: bytes | memoryview) -> bytes:
    """The serialized ``BytesValue(value=data)`` (empty for empty data, as
    protobuf writes a proto3 default)."""
    if not len(data):
        return b""
    return b"".join((bytes((_TAG,)), _varint(len(data)), data))


def payload(message: bytes) -> bytes | memoryview:
    """The ``value`` of a serialized ``BytesValue``: a view into
    ``message`` when it is the one field protobuf writes, else whatever the
    protobuf parser makes of it (unknown fields, a repeated field: last wins)."""
    n = len(message)
    if n == 0:
        return b""
    if message[0] == _TAG:
        length, shift, pos = 0, 0, 1
        while pos < n and pos < 11:
            byte = message[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                if pos + length == n:
                    return memoryview(message)[pos:]
                break
    return BytesValue.FromString(message).value
