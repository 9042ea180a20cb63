"""``versionpb.API``: the gateway answers with its own version."""

from __future__ import annotations

from typing import Any

import grpc.aio
from google.protobuf.empty_pb2 import Empty

from libs import version
from libs.api.version.versionpb import version_pb2, version_pb2_grpc
from libs.bus import Bus


def version_message(v: version.Version | None = None) -> version_pb2.Version:
    v = v or version.current()
    return version_pb2.Version(major=v.major, minor=v.minor, micro=v.micro, additional=v.additional)


class VersionServicer(version_pb2_grpc.APIServicer):
    async def GetVersion(  # type: ignore[override]
        self, request: Empty, context: grpc.aio.ServicerContext[Any, Any]
    ) -> version_pb2.Version:
        return version_message()


def register(server: grpc.aio.Server, bus: Bus) -> None:
    version_pb2_grpc.add_APIServicer_to_server(VersionServicer(), server)
