"""How a job's to-do datums are cut into chunks for the work queue (pure).

Chunk ``c`` of ``C`` holds the to-do datums ``[c*t//C, (c+1)*t//C)``: the
same datums always give the same chunks, so a master taking a running job
up again after a restart publishes only the unreported ones."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

# Chunk sizing: about CHUNKS_PER_WORKER chunks per worker, at most
# MAX_CHUNK_DATUMS datums in one, at most MAX_CHUNKS chunks in one job.
CHUNKS_PER_WORKER = 10
MAX_CHUNK_DATUMS = 1000
MAX_CHUNKS = 2000


def chunk_count(todo: int, workers: int, per_chunk: int = 0) -> int:
    """How many chunks ``todo`` datums travel in: ``per_chunk`` datums each
    (``chunk_spec.number``), else spread over ~10 chunks per worker; at most
    ``MAX_CHUNK_DATUMS`` datums per chunk and ``MAX_CHUNKS`` chunks."""
    if todo <= 0:
        return 0
    size = per_chunk if per_chunk > 0 else math.ceil(todo / (max(1, workers) * CHUNKS_PER_WORKER))
    size = max(1, min(size, MAX_CHUNK_DATUMS))
    return min(math.ceil(todo / size), MAX_CHUNKS)


def chunk_bounds(todo: int, chunks: int) -> list[int]:
    """Where each chunk starts among the to-do datums (plus the end)."""
    return [c * todo // chunks for c in range(chunks)] + [todo] if chunks else [0]


def chunk_of(bounds: Sequence[int], ordinal: int) -> int:
    return bisect.bisect_right(bounds, ordinal) - 1
