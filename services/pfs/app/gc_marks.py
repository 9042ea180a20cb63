"""The live set of a garbage collection: object keys marked reachable.

Marks live in a Python ``set`` while they fit in the memory budget
(``memory_bytes``, ~``BYTES_PER_MARK`` per key); past it every mark moves to
a table of a temporary SQLite database (deleted on ``close``) and later ones
go there too, so a store with more objects than memory still collects. The
sweep asks about keys in batches (``marked``), which suits both.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import tempfile
from collections.abc import Iterable, Sequence

DEFAULT_MEMORY = 256 << 20
# A 71-byte key in a set costs ~120 bytes (str object) + ~50 (set slot and growth).
BYTES_PER_MARK = 170
_BATCH = 500  # keys per SQLite statement (under its 999 parameter limit)


class MarkSet:
    """Keys marked live. ``add`` returns whether a key is new, so a walk
    descends into each shared subtree once."""

    def __init__(self, memory_bytes: int = 0, spill_dir: str | None = None) -> None:
        budget = memory_bytes if memory_bytes > 0 else DEFAULT_MEMORY
        self._limit = max(1, budget // BYTES_PER_MARK)
        self._spill_dir = spill_dir
        self._memory: set[str] | None = set()
        self._db: sqlite3.Connection | None = None
        self._path: str | None = None
        self._count = 0
        self._lock = asyncio.Lock()  # one SQLite call at a time

    @property
    def spilled(self) -> bool:
        """Whether the marks are in SQLite (the set outgrew the budget)."""
        return self._memory is None

    def __len__(self) -> int:
        return self._count

    async def add_new(self, keys: Sequence[str]) -> list[str]:
        """Mark ``keys``; return those that were not marked yet, in order."""
        if self._memory is not None:
            fresh: list[str] = []
            for key in keys:
                if key not in self._memory:
                    self._memory.add(key)
                    fresh.append(key)
            self._count += len(fresh)
            if len(self._memory) > self._limit:
                # From here on every caller goes to SQLite, waiting for the spill.
                memory, self._memory = self._memory, None
                async with self._lock:
                    await asyncio.to_thread(self._spill, memory)
            return fresh
        async with self._lock:
            out = await asyncio.to_thread(self._db_add_new, list(keys))
        self._count += len(out)
        return out

    async def marked(self, keys: Sequence[str]) -> set[str]:
        """Which of ``keys`` are marked."""
        if self._memory is not None:
            return {k for k in keys if k in self._memory}
        async with self._lock:
            return await asyncio.to_thread(self._db_marked, list(keys))

    async def close(self) -> None:
        self._memory = set()
        if self._db is not None:
            db, self._db = self._db, None
            await asyncio.to_thread(db.close)
        if self._path is not None:
            path, self._path = self._path, None
            os.unlink(path)

    # --- SQLite (on a worker thread; one call at a time) ---------------------

    def _spill(self, memory: set[str]) -> None:
        fd, path = tempfile.mkstemp(prefix="pach-gc-", suffix=".sqlite", dir=self._spill_dir)
        os.close(fd)
        self._path = path
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("CREATE TABLE marks (key TEXT PRIMARY KEY) WITHOUT ROWID")
        keys = sorted(memory)  # sorted inserts build the index fastest
        db.execute("BEGIN")
        db.executemany("INSERT INTO marks VALUES (?)", ((k,) for k in keys))
        db.execute("COMMIT")
        self._db = db

    def _db_add_new(self, keys: list[str]) -> list[str]:
        assert self._db is not None
        fresh: list[str] = []
        self._db.execute("BEGIN")
        try:
            for key in keys:
                cur = self._db.execute("INSERT OR IGNORE INTO marks VALUES (?)", (key,))
                if cur.rowcount:
                    fresh.append(key)
        finally:
            self._db.execute("COMMIT")
        return fresh

    def _db_marked(self, keys: list[str]) -> set[str]:
        assert self._db is not None
        found: set[str] = set()
        for part in _batches(keys, _BATCH):
            marks = ",".join("?" * len(part))
            rows = self._db.execute(f"SELECT key FROM marks WHERE key IN ({marks})", part)
            found.update(r[0] for r in rows)
        return found


def _batches(keys: list[str], size: int) -> Iterable[list[str]]:
    for i in range(0, len(keys), size):
        yield keys[i : i + size]
