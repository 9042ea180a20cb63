"""Read models: the document store projections write to (see ``base``).

``open_document_store`` picks the backend the configuration names: an
embedded SQLite file per service (the default) or a MongoDB database per
service in a cluster.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from libs.config import ReadModelConfig
from libs.errors import InvalidArgument
from libs.readmodels.base import Batch, Collection, Document, DocumentStore
from libs.readmodels.sqlite import SqliteDocumentStore

if TYPE_CHECKING:
    from libs.readmodels.mongo import MongoDocumentStore

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,40}$")


def open_document_store(cfg: ReadModelConfig, name: str) -> DocumentStore:
    """The store named ``name`` (usually the service): ``<sqlite_dir>/<name>.sqlite``
    or the Mongo database ``<mongo_db>_<name>``. Connects lazily; call
    ``open(collections)`` next."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidArgument(
            f"read model name {name!r} must be a letter followed by up to 40 letters, "
            "digits or underscores",
            name=name,
        )
    if cfg.backend == "sqlite":
        cfg.sqlite_dir.mkdir(parents=True, exist_ok=True)
        return SqliteDocumentStore(cfg.sqlite_dir / f"{name}.sqlite")
    if cfg.backend == "mongo":
        if not cfg.mongo_uri:
            raise InvalidArgument(
                "the mongo read model backend needs MONGODB_URI", name="MONGODB_URI"
            )
        # motor and pymongo (~150 modules) load only for a cluster that uses them.
        from motor.motor_asyncio import AsyncIOMotorClient

        from libs.readmodels.mongo import MongoDocumentStore

        client: Any = AsyncIOMotorClient(cfg.mongo_uri)
        return MongoDocumentStore(client, f"{cfg.mongo_db}_{name}", owns_client=True)
    raise InvalidArgument(
        f"read model backend must be sqlite or mongo, got {cfg.backend!r}", backend=cfg.backend
    )


def __getattr__(name: str) -> Any:
    if name == "MongoDocumentStore":
        from libs.readmodels.mongo import MongoDocumentStore

        return MongoDocumentStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Batch",
    "Collection",
    "Document",
    "DocumentStore",
    "MongoDocumentStore",
    "SqliteDocumentStore",
    "open_document_store",
]
