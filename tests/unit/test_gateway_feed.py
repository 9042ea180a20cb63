"""The change feed's bounds: one notice per changed aggregate per window,
a page that does not read loses its oldest notices (never the gateway's
memory), and past ``MAX_CLIENTS`` listeners a new page is refused."""

from __future__ import annotations

from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from nats.aio.client import Client

from services.gateway.errors import http_errors
from services.gateway.http import feed


class FakeMsg:
    def __init__(self, subject: str) -> None:
        self.subject = subject


class FakeNats:
    def __init__(self) -> None:
        self.subjects: list[str] = []

    async def subscribe(self, subject: str, cb: Any) -> Any:
        self.subjects.append(subject)
        return self


def test_a_listener_coalesces_and_stays_bounded() -> None:
    listener = feed.Listener()
    listener.add(("pps.job", "j1"))
    listener.add(("pps.job", "j1"))
    listener.add(("pfs.repo", "r"))
    assert listener.take() == [("pps.job", "j1"), ("pfs.repo", "r")]
    assert listener.take() == [] and not listener.ready.is_set()
    for n in range(feed.MAX_PENDING + 10):
        listener.add(("pfs.commit", str(n)))
    kept = listener.take()
    assert len(kept) == feed.MAX_PENDING and kept[0] == ("pfs.commit", "10")


async def test_only_aggregate_subjects_are_relayed() -> None:
    f = feed.Feed(cast(Client, FakeNats()))
    listener = feed.Listener()
    f.listeners.add(listener)
    await f._on_event(cast(Any, FakeMsg("ev.pps.job.abc")))
    await f._on_event(cast(Any, FakeMsg("not.an.event")))
    await f._on_event(cast(Any, FakeMsg("ev.pfs.repo.~zz")))  # a bad token
    assert listener.take() == [("pps.job", "abc")]


@pytest.mark.timeout(30)
async def test_past_the_limit_a_page_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feed, "MAX_CLIENTS", 1)
    nc = FakeNats()
    app = web.Application(middlewares=[http_errors])
    feed.mount(app, cast(Client, nc))
    async with TestClient(TestServer(app)) as client:
        assert sorted(nc.subjects) == sorted(feed.FEED_SUBJECTS)
        first = await client.get("/api/feed")
        assert first.status == 200
        assert (await first.content.readline()).startswith(b"retry:")
        second = await client.get("/api/feed")
        assert second.status == 503
        first.close()
