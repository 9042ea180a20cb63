"""Pipelined JetStream publishing with our own acknowledgement handling.

nats-py's ``publish_async`` never completes the future when the server
answers with an API error (its reply callback raises instead of failing the
future), so a refused append would hang. This publisher sends each message
with a reply subject under one wildcard inbox and resolves a future per
token: many appends can be in flight at once (pipelining) and every outcome,
ack or error, reaches its caller.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.nuid import NUID


@dataclass(frozen=True)
class Ack:
    stream: str
    seq: int
    duplicate: bool


class PublishError(Exception):
    def __init__(self, code: int, err_code: int, description: str) -> None:
        super().__init__(f"{description} (code {code}, err_code {err_code})")
        self.code = code
        self.err_code = err_code
        self.description = description


class NoStream(Exception):
    """No stream listens on the subject (JetStream answered 503)."""


class Publisher:
    """Acknowledgement deadlines are enforced by one sweeper task rather than a
    timer per message: pending publishes are kept in send order, so the
    sweeper only looks at the oldest ones."""

    def __init__(self, nc: Client, max_pending: int = 8192, sweep_every: float = 0.05) -> None:
        self._nc = nc
        self._nuid = NUID()
        self._prefix = ""
        self._sub: Subscription | None = None
        self._futures: dict[str, asyncio.Future[Ack]] = {}
        self._deadlines: dict[str, float] = {}  # insertion (= send) order
        self._slots = asyncio.Semaphore(max_pending)
        self._lock = asyncio.Lock()
        self._sweep_every = sweep_every
        self._sweeper: asyncio.Task[None] | None = None

    async def _ensure_inbox(self) -> None:
        if self._sub is not None:
            return
        async with self._lock:
            if self._sub is None:
                self._prefix = f"_INBOX.pub.{self._nuid.next().decode()}."
                self._sub = await self._nc.subscribe(self._prefix + "*", cb=self._on_reply)
                self._sweeper = asyncio.create_task(self._sweep())

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._sweep_every)
            now = loop.time()
            expired = []
            for token, deadline in self._deadlines.items():
                if deadline > now:
                    break
                expired.append(token)
            for token in expired:
                del self._deadlines[token]
                future = self._futures.pop(token, None)
                if future is not None and not future.done():
                    future.set_exception(TimeoutError())

    async def _on_reply(self, msg: Msg) -> None:
        token = msg.subject[len(self._prefix) :]
        self._deadlines.pop(token, None)
        future = self._futures.pop(token, None)
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get("Status") == "503":
            future.set_exception(NoStream())
            return
        try:
            resp = json.loads(msg.data)
        except ValueError:
            future.set_exception(PublishError(500, 0, "unparseable acknowledgement"))
            return
        err = resp.get("error")
        if err:
            future.set_exception(
                PublishError(
                    int(err.get("code", 500)),
                    int(err.get("err_code", 0)),
                    str(err.get("description", "")),
                )
            )
            return
        future.set_result(
            Ack(str(resp.get("stream", "")), int(resp["seq"]), bool(resp.get("duplicate")))
        )

    async def publish(
        self, subject: str, data: bytes, headers: dict[str, str], timeout: float
    ) -> Ack:
        """Publish and wait for the server's acknowledgement (TimeoutError if
        none arrives in ``timeout`` seconds)."""
        return await (await self.send(subject, data, headers, timeout))

    async def send(
        self, subject: str, data: bytes, headers: dict[str, str], timeout: float
    ) -> asyncio.Future[Ack]:
        """Publish without waiting: the returned future resolves to the ack
        (or fails). Deadlines are swept in send order, so one publisher
        should use one ``timeout`` throughout."""
        if self._sub is None:
            await self._ensure_inbox()
        if self._slots.locked():
            async with asyncio.timeout(timeout):
                await self._slots.acquire()
        else:
            await self._slots.acquire()
        loop = asyncio.get_running_loop()
        token = self._nuid.next().decode()
        future: asyncio.Future[Ack] = loop.create_future()
        future.add_done_callback(lambda _: self._slots.release())
        self._futures[token] = future
        self._deadlines[token] = loop.time() + timeout
        try:
            await self._nc.publish(subject, data, reply=self._prefix + token, headers=headers)
        except BaseException:
            self._futures.pop(token, None)
            self._deadlines.pop(token, None)
            future.cancel()  # releases the slot
            raise
        return future

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None
