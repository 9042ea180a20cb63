"""``libs.bytes_value``: GetFile's replies framed and read without messages,
byte for byte what protobuf writes and reads."""

from __future__ import annotations

import pytest
from google.protobuf.wrappers_pb2 import BytesValue

from libs.bytes_value import frame, payload


@pytest.mark.parametrize("n", [0, 1, 127, 128, 16383, 16384, 2 * 1024 * 1024, 3 * 1024 * 1024 + 7])
def test_frame_is_what_protobuf_serializes_and_payload_reads_it(n: int) -> None:
    data = bytes(i % 251 for i in range(n))
    framed = frame(data)
    assert framed == BytesValue(value=data).SerializeToString()
    assert frame(memoryview(data)) == framed
    assert bytes(payload(framed)) == data
    assert BytesValue.FromString(framed).value == data


def test_payload_is_a_view_not_a_copy() -> None:
    framed = frame(b"x" * 1000)
    view = payload(framed)
    assert isinstance(view, memoryview) and view.obj is framed


@pytest.mark.parametrize(
    "message",
    [
        # the value twice (protobuf: the last wins)
        BytesValue(value=b"first").SerializeToString()
        + BytesValue(value=b"last").SerializeToString(),
        # an unknown field after the value
        BytesValue(value=b"v").SerializeToString() + b"\x10\x05",
        # an unknown field before the value
        b"\x10\x05" + BytesValue(value=b"v").SerializeToString(),
        # a non-minimal varint length
        b"\x0a\x81\x00v",
    ],
)
def test_payload_reads_any_encoding_as_protobuf_does(message: bytes) -> None:
    assert bytes(payload(message)) == BytesValue.FromString(message).value


def test_payload_of_a_truncated_message_fails_as_protobuf_does() -> None:
    from google.protobuf.message import DecodeError

    with pytest.raises(DecodeError):
        payload(b"\x0a\x05ab")
