"""Unary replies the gateway gathers from pages (pfs's file listings, pps's
datums, the JSON arrays of the HTTP API) stay under the gRPC message limit:
beyond it they fail with ``TooLarge``, naming what to use instead."""

from __future__ import annotations

from libs.errors import ResourceExhausted

# Largest unary reply: Pachyderm 1.7's gRPC message limit (the server's
# PACH_GRPC_MAX_MESSAGE_BYTES by default).
MAX_REPLY = 20 << 20


class TooLarge(ResourceExhausted):
    """A unary reply would exceed the gRPC message limit."""

    def __init__(self, rpc: str, instead: str, limit: int) -> None:
        super().__init__(
            f"the {rpc} reply is over the {limit}-byte gRPC message limit; use {instead}",
            rpc=rpc,
            limit=limit,
        )
