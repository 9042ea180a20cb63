"""A projection of the counter aggregate (tests/support/counter.py) into a
read model, and a worker process that runs it (``python -m
tests.support.counter_projection NATS_URL SQLITE_PATH TARGET_SEQ``): it prints
its position as it goes and exits once it has applied ``TARGET_SEQ``."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import nats

from libs.api.events import testing_pb2 as t
from libs.events import Projection, ProjectionRunner, RecordedEvent, View
from libs.readmodels import Collection, SqliteDocumentStore
from tests.support import counter

COUNTERS = "counters"


class CounterProjection(Projection):
    name = "counters"
    subjects = ("ev.testing.counter.>",)
    collections = (Collection(COUNTERS, indexes=("value",)),)

    async def apply(self, event: RecordedEvent, view: View) -> None:
        key = event.aggregate.id
        doc = await view.get(COUNTERS, key) or {"value": 0, "version": 0, "name": ""}
        if event.aggregate_version <= doc["version"]:
            return  # applied already: re-applying must change nothing
        doc = {**doc, "version": event.aggregate_version}
        if isinstance(event.event, t.CounterIncremented):
            doc["value"] += event.event.by
        elif isinstance(event.event, t.Renamed):
            doc["name"] = f"{event.event.given_name} {event.event.family_name}"
        view.put(COUNTERS, key, doc)


async def _work(url: str, path: Path, target: int) -> None:
    nc = await nats.connect(url)
    store = SqliteDocumentStore(path)
    runner = ProjectionRunner(
        nc.jetstream(), counter.registry(), store, CounterProjection(), batch_size=50
    )
    await runner.start()
    print(f"start {runner.position}", flush=True)
    while runner.position < target:
        await asyncio.sleep(0.01)
        print(f"at {runner.position}", flush=True)
    await runner.stop()
    await store.close()
    await nc.close()
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(_work(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])))
