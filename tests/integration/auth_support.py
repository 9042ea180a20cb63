"""Helpers shared by the auth and enterprise tests: an Ed25519 key pair the
test cluster trusts, codes minted with it, and gRPC stubs with a token."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from libs.activation_code import mint
from libs.api.auth import auth_pb2_grpc
from libs.api.enterprise import enterprise_pb2_grpc
from libs.api.pfs import pfs_pb2_grpc
from libs.api.pps import pps_pb2_grpc


def write_keys(base: Path) -> tuple[Path, Path]:
    """(private PEM, public PEM) of a fresh Ed25519 key."""
    key = Ed25519PrivateKey.generate()
    private = base / "signing.pem"
    public = base / "trusted.pub.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def code(private: Path, ttl: float = 3600.0) -> str:
    key = serialization.load_pem_private_key(private.read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return mint(key, int(time.time() + ttl), "tests")


class Client:
    """Stubs of every API on one channel, sending ``token`` (if any)."""

    def __init__(self, port: int, token: str = "") -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.token = token
        self.auth = auth_pb2_grpc.APIStub(self.channel)
        self.enterprise = enterprise_pb2_grpc.APIStub(self.channel)
        self.pfs = pfs_pb2_grpc.APIStub(self.channel)
        self.pps = pps_pb2_grpc.APIStub(self.channel)

    def metadata(self) -> list[tuple[str, str]]:
        return [("authn-token", self.token)] if self.token else []

    def call(self, rpc: Any, request: Any, timeout: float = 20.0) -> Any:
        return rpc(request, metadata=self.metadata(), timeout=timeout)

    def code_of(self, rpc: Any, request: Any) -> grpc.StatusCode:
        """The status a unary call ends with (OK or its error's)."""
        try:
            self.call(rpc, request)
        except grpc.RpcError as err:
            return err.code()  # type: ignore[attr-defined,no-any-return]
        return grpc.StatusCode.OK

    def close(self) -> None:
        self.channel.close()
