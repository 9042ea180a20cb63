"""Pipelined JetStream publishing with our own acknowledgement handling.

nats-py's ``publish_async`` never completes the future when the server
answers with an API error (its reply callback raises instead of failing the
future), so a refused append would hang. This publisher sends each message
with a reply subject under one wildcard inbox and resolves a future per
token: many appends can be in flight at once (pipelining) and every outcome,
ack or error, reaches its caller.

Throughput: ``send_many`` hands a whole group of messages to the connection
in one step (see ``_write_raw``) instead of one ``nc.publish`` each, and the
common acknowledgement is parsed without ``json``; together they halve the
client CPU per append, which is what limits pipelined appends.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import deque
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from libs.bus.limits import check_publish
from libs.errors import InvalidArgument


class Ack(NamedTuple):
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


# The acknowledgement of a stored, non-duplicate message, exactly as
# nats-server writes it; anything else (errors, duplicates, domains) goes
# through json.
_PLAIN_ACK = re.compile(rb'\{"stream":"([^"\\]*)","seq":(\d+)\}')
# nats-py's own header rules (nats/aio/client.py, _send_publish).
_HEADER_KEY = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE_NEWLINES = str.maketrans({"\r": " ", "\n": " "})


_GOOD_HEADER_KEYS: set[str] = set()


def header_value(value: str) -> str:
    """``value`` as it travels in a header (what the receiver reads back)."""
    value = value.strip()
    if "\r" in value or "\n" in value:
        value = value.translate(_HEADER_VALUE_NEWLINES)
    return value


def header_block(headers: Mapping[str, str]) -> bytes:
    """The NATS/1.0 header block for ``headers``, encoded exactly as
    ``nc.publish`` encodes it (keys and values stripped, CR/LF in values
    replaced by spaces)."""
    lines = []
    for k, v in headers.items():
        key = k
        if key not in _GOOD_HEADER_KEYS:
            key = k.strip()
            if not key:
                continue
            if not _HEADER_KEY.fullmatch(key):
                raise nats.errors.BadHeaderError(key)
            if key == k and len(_GOOD_HEADER_KEYS) < 256:
                _GOOD_HEADER_KEYS.add(key)
        lines.append(f"{key}: {header_value(v)}\r\n")
    return ("NATS/1.0\r\n" + "".join(lines) + "\r\n").encode()


def _write_raw(nc: Client, commands: list[bytes], size: int, payload_bytes: int) -> bool:
    """Queue already-encoded HPUB commands on the connection and wake its
    flusher, as ``nc.publish`` does for one message at a time.

    nats-py has no public way to publish many messages in one step; per
    message, ``nc.publish`` costs about as much CPU as everything else an
    append does. So this uses nats-py 2.x internals (``_pending``,
    ``_pending_data_size``, ``_max_pending_size``, ``_flush_queue``,
    ``_flusher_task``) and mirrors ``Client._send_command`` and
    ``Client._flush_pending``. It returns False, having changed nothing,
    whenever the fast path does not apply (not connected, buffer limit,
    flusher not running, or a nats-py whose internals differ); the caller then
    falls back to the public ``nc.publish``, which handles all of those."""
    try:
        if not nc.is_connected or nc.is_draining_pubs:
            return False
        pending = nc._pending
        pending_size = nc._pending_data_size
        limit = nc._max_pending_size
        queue = nc._flush_queue
        flusher = nc._flusher_task
        if not (
            isinstance(pending, list)
            and isinstance(pending_size, int)
            and isinstance(limit, int)
            and isinstance(queue, asyncio.Queue)
            and flusher is not None
            and not flusher.done()
        ):
            return False
        if limit > 0 and pending_size + size > limit:
            return False  # nc.publish flushes with force_flush first
        pending.extend(commands)
        nc._pending_data_size = pending_size + size
        stats = nc.stats
        stats["out_msgs"] += len(commands)
        stats["out_bytes"] += payload_bytes
        if queue.empty():
            queue.put_nowait(asyncio.get_running_loop().create_future())
    except AttributeError:
        return False
    return True


class Outgoing(NamedTuple):
    subject: str
    data: bytes
    headers: Mapping[str, str]


class Publisher:
    """Acknowledgement deadlines are enforced by one sweeper task rather than a
    timer per message: pending publishes are kept in send order, so the
    sweeper only looks at the oldest ones. With nothing pending it sleeps
    until the next publish (an idle process does not wake 20 times a second)."""

    def __init__(self, nc: Client, max_pending: int = 8192, sweep_every: float = 0.05) -> None:
        self._nc = nc
        self._prefix = ""
        self._sub: Subscription | None = None
        # token -> (future, deadline), in insertion (= send) order. An entry
        # is a slot: at most max_pending are outstanding.
        self._futures: dict[str, tuple[asyncio.Future[Ack], float]] = {}
        self._max_pending = max_pending
        self._space_waiters: deque[asyncio.Future[None]] = deque()
        self._next_token = 0
        self._lock = asyncio.Lock()
        self._sweep_every = sweep_every
        self._sweeper: asyncio.Task[None] | None = None
        self._sent = asyncio.Event()  # set when a publish is pending
        self._raw_ok = True  # False once nats-py refused the fast path for good

    async def _ensure_inbox(self) -> None:
        if self._sub is not None:
            return
        async with self._lock:
            if self._sub is None:
                # Under the connection's own inbox prefix: with NATS
                # credentials a user may subscribe to its own inboxes only.
                self._prefix = f"{self._nc.new_inbox()}."
                self._sub = await self._nc.subscribe(self._prefix + "*", cb=self._on_reply)
                self._sweeper = asyncio.create_task(self._sweep())

    # --- slots ---------------------------------------------------------------

    def _released(self) -> None:
        """An entry left ``_futures``: wake a sender waiting for room."""
        waiters = self._space_waiters
        while waiters and len(self._futures) < self._max_pending:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _wait_for_room(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while len(self._futures) >= self._max_pending:
                waiter: asyncio.Future[None] = loop.create_future()
                self._space_waiters.append(waiter)
                try:
                    await waiter
                except BaseException:
                    if waiter.done() and not waiter.cancelled():
                        self._released()  # pass the wake-up on
                    raise

    def _drop(self, token: str) -> None:
        entry = self._futures.pop(token, None)
        if entry is not None:
            if not entry[0].done():
                entry[0].cancel()
            self._released()

    # --- acknowledgements ----------------------------------------------------

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        futures = self._futures
        while True:
            if not futures:
                self._sent.clear()
                await self._sent.wait()
            await asyncio.sleep(self._sweep_every)
            now = loop.time()
            expired = []
            for token, (_, deadline) in futures.items():
                if deadline > now:
                    break
                expired.append(token)
            for token in expired:
                future, _ = futures.pop(token)
                if not future.done():
                    future.set_exception(TimeoutError())
            if expired:
                self._released()

    async def _on_reply(self, msg: Msg) -> None:
        entry = self._futures.pop(msg.subject[len(self._prefix) :], None)
        if self._space_waiters:
            self._released()
        if entry is None:
            return
        future = entry[0]
        if future.done():
            return
        data = msg.data
        plain = _PLAIN_ACK.fullmatch(data)
        if plain is not None:
            future.set_result(Ack(plain[1].decode(), int(plain[2]), False))
            return
        if msg.headers and msg.headers.get("Status") == "503":
            future.set_exception(NoStream())
            return
        try:
            resp = json.loads(data)
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

    # --- sending -------------------------------------------------------------

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
        out = (await self.send_many([Outgoing(subject, data, headers)], timeout))[0]
        if isinstance(out, BaseException):
            raise out
        return out

    async def send_many(
        self, messages: Sequence[Outgoing], timeout: float
    ) -> list[asyncio.Future[Ack] | Exception]:
        """Publish ``messages`` without waiting for acknowledgements: one
        future per message, or the error that kept it from being sent
        (nats.errors.ConnectionClosedError, OutboundBufferLimitError, ...).
        The messages are handed to the connection together; the caller
        should yield to the event loop soon after so they get written."""
        if self._sub is None:
            await self._ensure_inbox()
        loop = asyncio.get_running_loop()
        futures = self._futures
        prefix = self._prefix
        max_pending = self._max_pending
        out: list[asyncio.Future[Ack] | Exception] = []
        # (token, future, message) of the group being collected, and its
        # encoded commands.
        group: list[tuple[str, asyncio.Future[Ack], Outgoing]] = []
        commands: list[bytes] = []
        size = payload_bytes = 0
        max_payload = self._nc.max_payload
        for message in messages:
            if len(futures) >= max_pending:
                # Out of slots: send what we have, then wait for room.
                await self._flush_group(group, commands, size, payload_bytes, out)
                group, commands, size, payload_bytes = [], [], 0, 0
                try:
                    await self._wait_for_room(timeout)
                except TimeoutError as exc:
                    out.append(exc)
                    continue
            try:  # what nats-server would refuse fails alone (libs/bus/limits.py)
                check_publish(
                    message.subject,
                    f"{prefix}{self._next_token + 1}",
                    message.headers,
                    len(message.data),
                    max_payload=max_payload,
                )
            except InvalidArgument as exc:
                await self._flush_group(group, commands, size, payload_bytes, out)
                group, commands, size, payload_bytes = [], [], 0, 0
                out.append(exc)
                continue
            self._next_token += 1
            token = str(self._next_token)
            future: asyncio.Future[Ack] = loop.create_future()
            futures[token] = (future, loop.time() + timeout)
            self._sent.set()
            group.append((token, future, message))
            if self._raw_ok:
                try:
                    hdr = header_block(message.headers)
                except nats.errors.BadHeaderError:
                    hdr = b""  # the public path raises it for this message
                    self._raw_ok = False
                data = message.data
                if len(data) > max_payload:
                    self._raw_ok = False  # the public path raises MaxPayloadError
                cmd = b"HPUB %s %s%s %d %d\r\n%s%s\r\n" % (
                    message.subject.encode(),
                    prefix.encode(),
                    token.encode(),
                    len(hdr),
                    len(hdr) + len(data),
                    hdr,
                    data,
                )
                commands.append(cmd)
                size += len(cmd)
                payload_bytes += len(data)
        await self._flush_group(group, commands, size, payload_bytes, out)
        return out

    async def _flush_group(
        self,
        group: list[tuple[str, asyncio.Future[Ack], Outgoing]],
        commands: list[bytes],
        size: int,
        payload_bytes: int,
        out: list[asyncio.Future[Ack] | Exception],
    ) -> None:
        if not group:
            return
        if (
            self._raw_ok
            and len(commands) == len(group)
            and _write_raw(self._nc, commands, size, payload_bytes)
        ):
            out.extend([future for _, future, _ in group])
            return
        # The public path, one message at a time.
        for token, future, message in group:
            try:
                await self._nc.publish(
                    message.subject,
                    message.data,
                    reply=self._prefix + token,
                    headers=dict(message.headers),
                )
            except Exception as exc:
                self._drop(token)
                out.append(exc)
                continue
            except BaseException:
                self._drop(token)
                raise
            out.append(future)  # (swept already if publish blocked past the deadline)
        self._raw_ok = True  # try the fast path again next time

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None
