"""Object URLs outside the cluster's own store: ``gs://`` (Google Cloud
Storage) and ``as://`` / ``wasb://`` (Azure Blob Storage), for put-file's
``-f <url>`` and a pipeline's egress. (``s3://`` has its own code paths:
the cluster's S3 backend and boto.)

A ``Bucket`` lists keys under a prefix, streams an object's bytes and writes
an object from a stream; nothing holds a whole object in memory. Errors are
typed and name the URL: a missing object or bucket is ``NotFound``, refused
access ``PermissionDenied``, an unreachable or failing server ``Unavailable``.

Credentials and endpoints are the cluster's object-store settings,
``CloudConfig.from_env()``:

- ``PACH_GCS_CREDENTIALS``: a service account's JSON key file (else the
  requests carry no token: the emulator, or public buckets);
  ``PACH_GCS_ENDPOINT``: the JSON API's root (an emulator), default
  ``https://storage.googleapis.com``.
- ``PACH_AZURE_ACCOUNT`` and ``PACH_AZURE_KEY`` (a shared key);
  ``PACH_AZURE_ENDPOINT``: the blob service's URL (an emulator such as
  Azurite: ``http://127.0.0.1:10000/<account>``), default
  ``https://<account>.blob.core.windows.net``. The same account is the
  cluster's own store when ``PACH_OBJECT_BACKEND=azure``.

URL forms: ``gs://<bucket>/<key>``, ``as://<container>/<key>`` (the
configured account) and ``wasb://<container>@<account>.blob.core.windows.net/<key>``
(1.7's spelling; the account must be the configured one).
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, AsyncIterable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from libs.errors import InvalidArgument

CLOUD_SCHEMES = ("gs", "as", "wasb")


@dataclass(frozen=True)
class CloudConfig:
    gcs_endpoint: str = "https://storage.googleapis.com"
    gcs_credentials: str = ""
    azure_account: str = ""
    azure_key: str = ""
    azure_endpoint: str = ""

    @classmethod
    def from_env(cls) -> CloudConfig:
        env = os.environ
        return cls(
            gcs_endpoint=env.get("PACH_GCS_ENDPOINT") or cls.gcs_endpoint,
            gcs_credentials=env.get("PACH_GCS_CREDENTIALS", ""),
            azure_account=env.get("PACH_AZURE_ACCOUNT", ""),
            azure_key=env.get("PACH_AZURE_KEY", ""),
            azure_endpoint=env.get("PACH_AZURE_ENDPOINT", ""),
        )


class Bucket(Protocol):
    """One bucket (GCS) or container (Azure)."""

    def keys(self, prefix: str) -> AsyncGenerator[str, None]:
        """Every object key starting with ``prefix``, in key order."""
        ...

    def read(self, key: str) -> AsyncGenerator[bytes, None]:
        """The object's bytes, block by block."""
        ...

    async def write(self, key: str, blocks: AsyncIterable[bytes]) -> int:
        """Store ``blocks`` as the object ``key``; the bytes written."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class CloudLocation:
    scheme: str  # gs | as
    bucket: str  # bucket or container
    key: str  # without a leading slash; "" for the whole bucket
    account: str = ""  # Azure only


def parse_cloud_url(url: str, cfg: CloudConfig) -> CloudLocation:
    """Where ``url`` points; InvalidArgument naming what is wrong."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    key = parts.path.lstrip("/")
    if scheme == "gs":
        if not parts.netloc:
            raise InvalidArgument(f"{url}: no bucket; use gs://<bucket>/<key>", url=url)
        return CloudLocation("gs", parts.netloc, key)
    if scheme in ("as", "wasb", "wasbs"):
        container, _, host = parts.netloc.partition("@")
        account = host.split(".", 1)[0] if host else cfg.azure_account
        if not container:
            raise InvalidArgument(f"{url}: no container; use as://<container>/<key>", url=url)
        if not cfg.azure_account or not cfg.azure_key:
            raise InvalidArgument(
                f"{url}: no Azure storage account is configured "
                "(set PACH_AZURE_ACCOUNT and PACH_AZURE_KEY for the cluster)",
                url=url,
            )
        if account != cfg.azure_account:
            raise InvalidArgument(
                f"{url}: account {account!r} is not the cluster's Azure account "
                f"{cfg.azure_account!r}",
                url=url,
            )
        return CloudLocation("as", container, key, account)
    raise InvalidArgument(f"{url}: not a gs://, as:// or wasb:// URL", url=url)


def open_bucket(loc: CloudLocation, url: str, cfg: CloudConfig) -> Bucket:
    """A client for the bucket ``loc`` names; close it when done."""
    if loc.scheme == "gs":
        from libs.objects.gcs import GcsBucket

        return GcsBucket(
            loc.bucket, url=url, endpoint=cfg.gcs_endpoint, credentials=cfg.gcs_credentials
        )
    from libs.objects.azure import AzureContainer

    endpoint = cfg.azure_endpoint or f"https://{loc.account}.blob.core.windows.net"
    return AzureContainer(
        loc.bucket, url=url, endpoint=endpoint, account=loc.account, key=cfg.azure_key
    )
