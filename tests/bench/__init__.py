"""Benchmarks: ``make bench`` runs ``python -m tests.bench`` and prints a table.

Each ``tests/bench/bench_*.py`` module exposes ``async def run(ctx: BenchContext)
-> list[Result]``; the runner collects and prints them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Result:
    name: str
    value: float
    unit: str
    floor: float | None = None  # the number it is compared to
    higher_is_better: bool = True
    note: str = ""

    @property
    def ok(self) -> bool | None:
        if self.floor is None:
            return None
        return self.value >= self.floor if self.higher_is_better else self.value <= self.floor


@dataclass(frozen=True)
class BenchContext:
    work_dir: Path  # scratch space, removed afterwards
    nats_url: str  # a running nats-server with JetStream
    s3_endpoint: str | None  # the S3 test server, when running
