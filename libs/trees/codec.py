"""Tree objects in the object store: encode, name by hash, write once, load.

Every object is a ``TreeObject`` (a file, a directory or a page) stored under
``trees/<h[:2]>/<h>`` where ``h`` is the BLAKE3 hex of its encoding. A missing
or undecodable object is corruption: ``Internal``.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError

from libs.api.internal import tree_pb2
from libs.errors import Internal, ObjectNotFound
from libs.objects import ObjectStore, hash_bytes


def tree_key(digest: str) -> str:
    return f"trees/{digest[:2]}/{digest}"


def encode(obj: tree_pb2.TreeObject) -> tuple[str, bytes]:
    data = obj.SerializeToString(deterministic=True)
    return hash_bytes(data), data


def file_object(refs: list[tree_pb2.DataRef], size: int) -> tree_pb2.TreeObject:
    return tree_pb2.TreeObject(file=tree_pb2.FileNode(refs=refs, size=size))


EMPTY_DIR_HASH, EMPTY_DIR_DATA = encode(tree_pb2.TreeObject(dir=tree_pb2.DirNode()))


async def put_once(store: ObjectStore, digest: str, data: bytes) -> None:
    """Write the object unless it is already there (content-addressed: same
    bytes); one already there is touched, so garbage collection spares it."""
    key = tree_key(digest)
    if not await store.touch(key):
        await store.put(key, data)


async def _load(store: ObjectStore, digest: str, want: str) -> tree_pb2.TreeObject:
    try:
        data = await store.get(tree_key(digest))
    except ObjectNotFound as e:
        raise Internal(f"tree object {digest} is missing", hash=digest) from e
    obj = tree_pb2.TreeObject()
    try:
        obj.ParseFromString(data)
    except DecodeError as e:
        raise Internal(f"tree object {digest} cannot be decoded", hash=digest) from e
    if obj.WhichOneof("node") != want:
        raise Internal(f"tree object {digest} is not a {want}", hash=digest, expected=want)
    return obj


async def load_dir(store: ObjectStore, digest: str) -> tree_pb2.DirNode:
    if digest == EMPTY_DIR_HASH:
        return tree_pb2.DirNode()
    return (await _load(store, digest, "dir")).dir


async def load_page(store: ObjectStore, digest: str) -> tree_pb2.Page:
    return (await _load(store, digest, "page")).page


async def load_file(store: ObjectStore, digest: str) -> tree_pb2.FileNode:
    return (await _load(store, digest, "file")).file
