"""Egress: copy every file of a job's output tree to the pipeline's
``egress.URL`` once the job's output commit is finished.

Supported URLs: ``s3://<bucket>[/<prefix>]``, ``gs://<bucket>[/<prefix>]``,
``as://<container>[/<prefix>]`` and ``wasb://<container>@<account>...``. The
S3 endpoint, region and credentials are this deployment's
(``PACH_S3_ENDPOINT``, ``PACH_S3_REGION``, ``PACH_S3_ACCESS_KEY``/
``PACH_S3_SECRET_KEY``, else the AWS default chain); GCS's and Azure's are
the cluster's ``PACH_GCS_*`` / ``PACH_AZURE_*`` settings
(``libs.objects.cloud``).
Files stream from the object store to S3 (multipart above 8 MiB); nothing
is held whole in memory."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlparse

from libs.config import ObjectStoreConfig
from libs.errors import InvalidArgument
from libs.filedata import read_refs
from libs.objects import ObjectStore, S3ObjectStore
from libs.objects.cloud import CLOUD_SCHEMES, CloudConfig, open_bucket, parse_cloud_url
from libs.trees import file_refs, walk


@dataclass(frozen=True)
class EgressTarget:
    bucket: str
    prefix: str


def parse_url(url: str) -> EgressTarget:
    parsed = urlparse(url)
    if parsed.scheme not in ("s3", *CLOUD_SCHEMES, "wasbs") or not parsed.netloc:
        raise InvalidArgument(
            f"egress URL {url!r} is not supported: use s3://, gs://, as:// or wasb:// "
            "followed by <bucket>[/<prefix>]",
            url=url,
        )
    return EgressTarget(parsed.netloc, parsed.path.strip("/"))


async def egress(
    store: ObjectStore, root: str, url: str, s3: ObjectStoreConfig | None = None
) -> int:
    """Copy every file under ``root`` (a tree root hash) to ``url``; the number
    of files copied. Errors name the URL (the job fails with them)."""
    target = parse_url(url)
    if urlparse(url).scheme != "s3":
        return await _egress_cloud(store, root, url)
    cfg = s3 or ObjectStoreConfig()
    dest = S3ObjectStore(
        bucket=target.bucket,
        endpoint_url=cfg.s3_endpoint or None,
        region=cfg.s3_region,
        access_key=cfg.s3_access_key or None,
        secret_key=cfg.s3_secret_key or None,
        prefix=target.prefix,
    )
    copied = 0
    try:
        async for path, node in walk(store, root):
            if node.is_dir:
                continue
            refs = await file_refs(store, node)
            await dest.put_stream(path.lstrip("/"), read_refs(store, refs))
            copied += 1
    finally:
        await dest.close()
    return copied


async def _egress_cloud(store: ObjectStore, root: str, url: str) -> int:
    cfg = CloudConfig.from_env()
    loc = parse_cloud_url(url, cfg)
    prefix = loc.key.strip("/")
    bucket = open_bucket(loc, url, cfg)
    copied = 0
    try:
        async for path, node in walk(store, root):
            if node.is_dir:
                continue
            refs = await file_refs(store, node)
            key = f"{prefix}/{path.lstrip('/')}" if prefix else path.lstrip("/")
            await bucket.write(key, read_refs(store, refs))
            copied += 1
    finally:
        await bucket.close()
    return copied
