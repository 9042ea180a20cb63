"""Shared helpers for the tree tests: a counting store and op streams."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from pathlib import Path

from libs.api.internal import tree_pb2
from libs.objects import LocalObjectStore, hash_bytes
from libs.trees import DataRef, Op, TreeRoot, build, walk


class CountingStore(LocalObjectStore):
    """The real local store (not durable), counting tree object reads and writes."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, durable=False)
        self.gets: list[str] = []
        self.puts: list[str] = []

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        self.gets.append(key)
        return await super().get(key, offset, length)

    async def put(self, key: str, data: bytes) -> None:
        self.puts.append(key)
        await super().put(key, data)

    def reset(self) -> None:
        self.gets.clear()
        self.puts.clear()


def ref(n: int, length: int = 10) -> DataRef:
    """A distinct data ref (the chunk need not exist: trees only store refs)."""
    return DataRef(hash_bytes(n.to_bytes(8, "big")), 0, length)


async def stream(ops: Iterable[Op]) -> AsyncIterator[Op]:
    for op in ops:
        yield op


async def apply(store: CountingStore, base: str | None, *ops: Op) -> TreeRoot:
    return await build(store, base, stream(ops))


async def paths(store: CountingStore, root: str) -> list[str]:
    return [p async for p, _ in walk(store, root)]


async def tree_objects(store: CountingStore) -> list[tuple[str, tree_pb2.TreeObject]]:
    """Every stored tree object, checked against its content address."""
    out = []
    async for info in store.list("trees/"):
        data = await LocalObjectStore.get(store, info.key)
        assert info.key.endswith(hash_bytes(data)), info.key
        out.append((info.key, tree_pb2.TreeObject.FromString(data)))
    return out
