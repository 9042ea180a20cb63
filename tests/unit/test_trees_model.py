"""Random op sequences against a plain in-memory model, with tiny pages."""

from __future__ import annotations

import random

import pytest

from libs.trees import DataRef, Delete, Op, Put, diff, pages, walk
from tests.unit.trees_support import CountingStore, apply, ref


@pytest.fixture
def small_pages(monkeypatch):
    monkeypatch.setattr(pages, "TARGET", 4)
    monkeypatch.setattr(pages, "MAX_ITEMS", 12)


def _model_paths(files: dict[str, tuple[DataRef, ...]], dirs: set[str]) -> list[str]:
    def key(p: str) -> bytes:
        return p.encode().replace(b"/", b"\x00")

    return sorted(["/", *dirs, *files], key=key)


@pytest.mark.parametrize("seed", range(6))
async def test_random_batches_match_the_model(tmp_path, small_pages, seed):
    rng = random.Random(seed)
    store = CountingStore(tmp_path / "objects")
    files: dict[str, tuple[DataRef, ...]] = {}
    dirs: set[str] = set()
    root = None
    for _ in range(8):
        ops: list[Op] = []
        for _ in range(rng.randrange(1, 120)):
            d = f"/d{rng.randrange(4)}"
            path = f"{d}/f{rng.randrange(150):03d}"
            r = rng.random()
            if r < 0.6:
                n = rng.randrange(10**6)
                append = rng.random() < 0.3
                ops.append(Put(path, [ref(n)], append=append))
                old = files.get(path, ()) if append else ()
                files[path] = (*old, ref(n))
                dirs.add(d)
            elif r < 0.95:
                ops.append(Delete(path))
                files.pop(path, None)
            else:
                ops.append(Delete(d))
                dirs.discard(d)
                for p in [p for p in files if p.startswith(d + "/")]:
                    del files[p]
        new = await apply(store, root, *ops)
        got = [(p, n.refs) async for p, n in walk(store, new.hash)]
        assert [p for p, _ in got] == _model_paths(files, dirs)
        assert all(refs == files[p] for p, refs in got if p in files)
        assert new.files == len(files)
        if root is not None:
            changed = {p async for p, _, _ in diff(store, root, new.hash)}
            before = {p async for p, _ in walk(store, root)}
            after = {p for p, _ in got}
            assert before ^ after <= changed
        root = new.hash
    fresh = await apply(store, None, *(Put(p, list(r)) for p, r in files.items()))
    empties = [d for d in dirs if not any(p.startswith(d + "/") for p in files)]
    if not empties:
        assert fresh.hash == root
