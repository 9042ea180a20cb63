"""Configuration: frozen dataclasses read from the environment.

Nothing here connects to anything; ``Config.from_env()`` only reads
variables. Every service receives one ``Config``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from libs.errors import InvalidArgument


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidArgument(f"{name} must be an integer, got {raw!r}", name=name) from None


def _str(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name)
    return default if raw is None or raw == "" else raw


OBJECT_BACKENDS = ("local", "s3", "azure")


@dataclass(frozen=True)
class ObjectStoreConfig:
    """``backend`` is ``local`` (a directory under the data dir), ``s3`` or
    ``azure`` (a Blob Storage container; its account settings are also the
    ones ``as://`` URLs use)."""

    backend: str = "local"
    local_root: Path = Path(".pachyderm/objects")
    s3_bucket: str = ""
    s3_endpoint: str = ""
    s3_region: str = "us-east-1"
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_prefix: str = ""
    azure_container: str = ""
    azure_account: str = ""
    azure_key: str = field(default="", repr=False)
    azure_endpoint: str = ""
    azure_prefix: str = ""


@dataclass(frozen=True)
class ReadModelConfig:
    """``backend`` is ``sqlite`` (a file per service under the data dir) or ``mongo``."""

    backend: str = "sqlite"
    sqlite_dir: Path = Path(".pachyderm/readmodels")
    mongo_uri: str = ""
    mongo_db: str = "pachyderm"


@dataclass(frozen=True)
class Config:
    service: str = "pachd"
    replica: str = "0"
    nats_url: str = "nats://127.0.0.1:4222"
    # This process's own NATS user (PACH_NATS_USER / PACH_NATS_PASSWORD);
    # empty: connect without credentials (a server without authorization).
    nats_user: str = ""
    nats_password: str = field(default="", repr=False)
    data_dir: Path = Path(".pachyderm")
    grpc_port: int = 30650
    http_port: int = 30080
    # The address the gateway's gRPC and HTTP listeners bind: loopback unless
    # told otherwise (PACH_BIND_ADDRESS; PACH_GRPC_HOST is its older name).
    grpc_host: str = "127.0.0.1"
    log_format: str = "auto"  # auto | json | console
    log_level: str = "info"
    max_message_bytes: int = 1 << 20  # NATS messages (commands, replies, events)
    # gRPC messages at the gateway: Pachyderm 1.7's limit, 20 MiB (its clients
    # send files in 3 MiB PutFile messages).
    grpc_max_message_bytes: int = 20 << 20
    request_timeout_s: float = 10.0
    # How long the gateway holds calls to a backend that has not served since
    # it started (PACH_GATEWAY_HOLD_MS); 0: never hold, answer UNAVAILABLE.
    gateway_hold_s: float = 60.0
    events_stream: str = "EVENTS"
    events_replicas: int = 1
    objects: ObjectStoreConfig = field(default_factory=ObjectStoreConfig)
    readmodels: ReadModelConfig = field(default_factory=ReadModelConfig)
    # Where extract -u / restore -u may write and read files (PACH_BACKUP_DIR).
    backup_dir: Path = Path(".pachyderm/backups")

    @classmethod
    def from_env(cls, service: str, env: Mapping[str, str] | None = None) -> Config:
        e: Mapping[str, str] = os.environ if env is None else env
        data_dir = Path(_str(e, "PACH_DATA_DIR", ".pachyderm")).absolute()
        log_format = _str(e, "PACH_LOG_FORMAT", "auto")
        if log_format not in ("auto", "json", "console"):
            raise InvalidArgument(
                f"PACH_LOG_FORMAT must be auto, json or console, got {log_format!r}",
                name="PACH_LOG_FORMAT",
            )
        objects = ObjectStoreConfig(
            backend=_str(e, "PACH_OBJECT_BACKEND", "local"),
            local_root=Path(_str(e, "PACH_OBJECT_DIR", str(data_dir / "objects"))),
            s3_bucket=_str(e, "PACH_S3_BUCKET", ""),
            s3_endpoint=_str(e, "PACH_S3_ENDPOINT", ""),
            s3_region=_str(e, "PACH_S3_REGION", "us-east-1"),
            s3_access_key=_str(e, "PACH_S3_ACCESS_KEY", ""),
            s3_secret_key=_str(e, "PACH_S3_SECRET_KEY", ""),
            s3_prefix=_str(e, "PACH_S3_PREFIX", ""),
            azure_container=_str(e, "PACH_AZURE_CONTAINER", ""),
            azure_account=_str(e, "PACH_AZURE_ACCOUNT", ""),
            azure_key=_str(e, "PACH_AZURE_KEY", ""),
            azure_endpoint=_str(e, "PACH_AZURE_ENDPOINT", ""),
            azure_prefix=_str(e, "PACH_AZURE_PREFIX", ""),
        )
        if objects.backend not in OBJECT_BACKENDS:
            raise InvalidArgument(
                f"PACH_OBJECT_BACKEND must be local, s3 or azure, got {objects.backend!r}",
                name="PACH_OBJECT_BACKEND",
            )
        readmodels = ReadModelConfig(
            backend=_str(e, "PACH_READMODEL_BACKEND", "sqlite"),
            sqlite_dir=Path(_str(e, "PACH_READMODEL_DIR", str(data_dir / "readmodels"))),
            mongo_uri=_str(e, "MONGODB_URI", ""),
            mongo_db=_str(e, "PACH_MONGO_DB", "pachyderm"),
        )
        if readmodels.backend not in ("sqlite", "mongo"):
            raise InvalidArgument(
                f"PACH_READMODEL_BACKEND must be sqlite or mongo, got {readmodels.backend!r}",
                name="PACH_READMODEL_BACKEND",
            )
        return cls(
            service=service,
            replica=_str(e, "PACH_REPLICA", str(os.getpid())),
            nats_url=_str(e, "PACH_NATS_URL", "nats://127.0.0.1:4222"),
            nats_user=_str(e, "PACH_NATS_USER", ""),
            nats_password=_str(e, "PACH_NATS_PASSWORD", ""),
            data_dir=data_dir,
            grpc_port=_int(e, "PACH_GRPC_PORT", 30650),
            http_port=_int(e, "PACH_HTTP_PORT", 30080),
            grpc_host=_str(e, "PACH_BIND_ADDRESS", _str(e, "PACH_GRPC_HOST", "127.0.0.1")),
            log_format=log_format,
            log_level=_str(e, "PACH_LOG_LEVEL", "info"),
            max_message_bytes=_int(e, "PACH_MAX_MESSAGE_BYTES", 1 << 20),
            grpc_max_message_bytes=_int(e, "PACH_GRPC_MAX_MESSAGE_BYTES", 20 << 20),
            request_timeout_s=float(_int(e, "PACH_REQUEST_TIMEOUT_MS", 10_000)) / 1000.0,
            gateway_hold_s=float(_int(e, "PACH_GATEWAY_HOLD_MS", 60_000)) / 1000.0,
            events_stream=_str(e, "PACH_EVENTS_STREAM", "EVENTS"),
            events_replicas=_int(e, "PACH_EVENTS_REPLICAS", 1),
            objects=objects,
            readmodels=readmodels,
            backup_dir=Path(_str(e, "PACH_BACKUP_DIR", str(data_dir / "backups"))).absolute(),
        )


NATS_CREDENTIAL_VARS = ("PACH_NATS_USER", "PACH_NATS_PASSWORD")
WORKER_CREDENTIAL_VARS = ("PACH_NATS_WORKER_USER", "PACH_NATS_WORKER_PASSWORD")


def worker_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment of a pipeline worker started from a process whose
    environment is ``env`` (pps): the workers' NATS credential
    (``PACH_NATS_WORKER_USER`` / ``PACH_NATS_WORKER_PASSWORD``) becomes its
    ``PACH_NATS_USER`` / ``PACH_NATS_PASSWORD``; the starter's own never
    passes on (without a worker credential the worker has none)."""
    out = {k: v for k, v in env.items() if k not in NATS_CREDENTIAL_VARS + WORKER_CREDENTIAL_VARS}
    user, password = (env.get(k, "") for k in WORKER_CREDENTIAL_VARS)
    if user and password:
        out["PACH_NATS_USER"], out["PACH_NATS_PASSWORD"] = user, password
    return out
