"""The object store: content lives here, never in NATS.

``open_object_store(cfg)`` builds the backend a ``ObjectStoreConfig`` names:
a local directory (the default), S3 or Azure Blob Storage. ``libs.objects.chunking`` stores byte
streams as content-addressed chunks on top of either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from libs.config import ObjectStoreConfig
from libs.errors import InvalidArgument
from libs.objects.base import ObjectInfo, ObjectStore
from libs.objects.chunking import (
    CHUNK_SIZE,
    ChunkRef,
    chunk_key,
    hash_bytes,
    put_chunks,
    read_chunks,
)
from libs.objects.local import LocalObjectStore

if TYPE_CHECKING:
    from libs.objects.azure import AzureObjectStore
    from libs.objects.s3 import S3ObjectStore

__all__ = [
    "CHUNK_SIZE",
    "AzureObjectStore",
    "ChunkRef",
    "LocalObjectStore",
    "ObjectInfo",
    "ObjectStore",
    "S3ObjectStore",
    "chunk_key",
    "hash_bytes",
    "open_object_store",
    "put_chunks",
    "read_chunks",
]


def __getattr__(name: str) -> Any:
    # The S3 and Azure backends load on first use: aioboto3 takes ~0.25 s to
    # import and azure-storage-blob more, which every pachctl command would
    # otherwise pay.
    if name == "S3ObjectStore":
        from libs.objects.s3 import S3ObjectStore

        return S3ObjectStore
    if name == "AzureObjectStore":
        from libs.objects.azure import AzureObjectStore

        return AzureObjectStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_object_store(cfg: ObjectStoreConfig) -> ObjectStore:
    """The store ``cfg`` describes; InvalidArgument names what is missing or wrong."""
    if cfg.backend == "local":
        if not str(cfg.local_root):
            raise InvalidArgument("object store: local backend needs a root directory")
        return LocalObjectStore(cfg.local_root)
    if cfg.backend == "s3":
        if not cfg.s3_bucket:
            raise InvalidArgument("object store: s3 backend needs a bucket (PACH_S3_BUCKET)")
        if bool(cfg.s3_access_key) != bool(cfg.s3_secret_key):
            raise InvalidArgument(
                "object store: give both PACH_S3_ACCESS_KEY and PACH_S3_SECRET_KEY, or neither "
                "(then the AWS default credential chain is used)"
            )
        from libs.objects.s3 import S3ObjectStore

        return S3ObjectStore(
            bucket=cfg.s3_bucket,
            endpoint_url=cfg.s3_endpoint,
            region=cfg.s3_region,
            access_key=cfg.s3_access_key,
            secret_key=cfg.s3_secret_key,
            prefix=cfg.s3_prefix,
        )
    if cfg.backend == "azure":
        missing = [
            var
            for var, value in (
                ("PACH_AZURE_CONTAINER", cfg.azure_container),
                ("PACH_AZURE_ACCOUNT", cfg.azure_account),
                ("PACH_AZURE_KEY", cfg.azure_key),
            )
            if not value
        ]
        if missing:
            raise InvalidArgument(
                f"object store: the azure backend needs {', '.join(missing)}", missing=missing
            )
        from libs.objects.azure import AzureObjectStore

        return AzureObjectStore(
            cfg.azure_container,
            account=cfg.azure_account,
            key=cfg.azure_key,
            endpoint=cfg.azure_endpoint,
            prefix=cfg.azure_prefix,
        )
    raise InvalidArgument(
        f"object store backend must be local, s3 or azure, got {cfg.backend!r}",
        backend=cfg.backend,
    )
