"""The bus: serve and call commands/queries over NATS request/reply."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import nats.errors
import structlog
from google.protobuf.message import DecodeError, Message
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from opentelemetry import propagate, trace

from libs.bus.limits import guard
from libs.errors import (
    DeadlineExceeded,
    InvalidArgument,
    MalformedMessage,
    MessageTooLarge,
    PachError,
    Unavailable,
    from_unexpected,
    from_wire,
    to_wire,
)

H_PRINCIPAL = "Pach-Principal"
H_REQUEST_ID = "Pach-Request-Id"
H_ERROR = "Pach-Error"
# Set by the gateway on every request it forwards for a client: the stream
# sequence of the last auth event its view applied when it authenticated
# the caller. Requests without it come from inside the cluster (service to
# service) and are not authorized again.
H_AUTH_SEQ = "Pach-Auth-Seq"
# cmd and qry are request/reply in a queue group (one replica answers);
# note is published to every replica of the service, with no answer.
KINDS = ("cmd", "qry", "note")

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)
Handler = Callable[[Req, "Context"], Awaitable[Message]]

_log = structlog.get_logger("bus")
_tracer = trace.get_tracer("libs.bus")


@dataclass(frozen=True)
class Context:
    """What a handler knows about the request beyond its body."""

    principal: str
    request_id: str
    subject: str
    # ``H_AUTH_SEQ`` of a client's request; -1 for a request from inside
    # the cluster.
    auth_seq: int = -1

    @property
    def external(self) -> bool:
        """Forwarded by the gateway on behalf of a client."""
        return self.auth_seq >= 0


# Decides whether a request may run (``Bus.guard``): raises to refuse it.
Guard = Callable[[str, Message, Context], Awaitable[None]]


def _auth_seq(headers: dict[str, str]) -> int:
    raw = headers.get(H_AUTH_SEQ)
    if raw is None:
        return -1
    try:
        return max(int(raw), 0)
    except ValueError:
        return 0


# Requests whose names start with these read state; everything else changes it.
QUERY_PREFIXES = ("Inspect", "List", "Glob", "Get", "Diff", "Walk", "Health")


def kind_for(name: str) -> str:
    """The bus kind by naming convention: ``qry`` for reads, ``cmd`` otherwise."""
    return "qry" if name.startswith(QUERY_PREFIXES) else "cmd"


def subject_for(kind: str, service: str, name: str) -> str:
    if kind not in KINDS:
        raise InvalidArgument(f"bus kind must be one of {KINDS}, got {kind!r}", kind=kind)
    for part, what in ((service, "service"), (name, "name")):
        if not part or not part.replace("_", "").replace("-", "").isalnum():
            raise InvalidArgument(f"bad bus {what} {part!r}", **{what: part})
    return f"{kind}.{service}.{name}"


class Bus:
    """One per process and service. ``serve`` registers handlers for this
    service; ``request`` calls any service."""

    def __init__(
        self,
        nc: Client,
        *,
        service: str,
        max_message_bytes: int = 1 << 20,
        timeout: float = 10.0,
    ) -> None:
        # A subject or message nats-server would refuse (and close the
        # connection for) fails alone, before it is sent.
        self._nc = guard(nc)
        self.service = service
        self.max_message_bytes = max_message_bytes
        self.timeout = timeout
        # Authorization of the commands and queries this bus serves (set by
        # the service once its auth view runs); None lets everything in.
        self.guard: Guard | None = None
        # The gateway's: every request it sends is on a client's behalf and
        # carries this as ``H_AUTH_SEQ``.
        self.auth_seq_source: Callable[[], int] | None = None
        self._subs: list[Subscription] = []
        self._inflight: set[asyncio.Task[None]] = set()
        # Called with each request's subject before its handler; raising a
        # PachError refuses the request (e.g. while the event log is lost).
        self.admission: Callable[[str], None] | None = None
        # Awaited with the target service before each request but Health
        # (the gateway holds calls to a backend that has not served yet).
        self.hold: Callable[[str], Awaitable[None]] | None = None

    # --- serving -----------------------------------------------------------

    async def serve(
        self,
        name: str,
        request_type: type[Req],
        handler: Callable[[Req, Context], Awaitable[Message]],
        *,
        kind: str = "cmd",
        quiet: bool = False,
    ) -> Subscription:
        """Serve ``<kind>.<service>.<name>``. ``quiet`` logs each request at
        debug level instead of info (for probes such as Health). The
        subscription returned ends with ``unserve`` (a name served for a
        while only) or with ``close``."""
        subject = subject_for(kind, self.service, name)
        log = _log.debug if quiet else _log.info

        async def guarded(request: Req, ctx: Context) -> Message:
            if self.guard is not None:  # authorization, before the handler
                await self.guard(name, request, ctx)
            return await handler(request, ctx)

        async def on_msg(msg: Msg) -> None:
            # Each request runs in its own task so one slow handler does not
            # hold up the subscription's other requests.
            task = asyncio.create_task(self._handle(msg, subject, request_type, guarded, log))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

        sub = await self._nc.subscribe(subject, queue=self.service, cb=on_msg)
        self._subs.append(sub)
        # Once serve returns, requests from any connection must reach us: wait
        # until the server has registered the subscription.
        await self._nc.flush()
        return sub

    async def refuse(self, kind: str, error: Callable[[], PachError]) -> Subscription:
        """Answer every ``<kind>.<service>.*`` request with ``error()`` (while
        the service cannot set up its handlers); end it with ``unserve``."""
        subject = f"{kind}.{self.service}.>"

        async def on_msg(msg: Msg) -> None:
            if not msg.subject.endswith(".Health"):
                await self._respond(msg, b"", error())

        sub = await self._nc.subscribe(subject, queue=self.service, cb=on_msg)
        self._subs.append(sub)
        await self._nc.flush()
        return sub

    async def unserve(self, sub: Subscription) -> None:
        """Stop serving what ``serve`` returned ``sub`` for; requests already
        taken finish."""
        if sub in self._subs:
            self._subs.remove(sub)
            try:
                await sub.drain()  # type: ignore[no-untyped-call]
            except nats.errors.Error:
                await sub.unsubscribe()

    async def _handle(
        self,
        msg: Msg,
        subject: str,
        request_type: type[Req],
        handler: Callable[[Req, Context], Awaitable[Message]],
        log: Callable[..., Any],
    ) -> None:
        headers = msg.headers or {}
        ctx = Context(
            principal=headers.get(H_PRINCIPAL, ""),
            request_id=headers.get(H_REQUEST_ID, "") or uuid.uuid4().hex,
            subject=subject,
            auth_seq=_auth_seq(headers),
        )
        started = time.perf_counter()
        status = "ok"
        parent = propagate.extract(headers)
        with _tracer.start_as_current_span(
            subject, context=parent, kind=trace.SpanKind.SERVER
        ) as span:
            try:
                if self.admission is not None:
                    self.admission(subject)
                reply = await handler(self._decode(msg.data, request_type), ctx)
                body = reply.SerializeToString()
                if len(body) > self.max_message_bytes:
                    raise MessageTooLarge(len(body), self.max_message_bytes, "reply")
                await self._respond(msg, body, None)
            except PachError as err:
                status = err.code
                span.set_attribute("pach.error", err.code)
                await self._respond(msg, b"", err)
            except Exception as exc:  # a handler bug must not kill the service
                status = "internal"
                span.record_exception(exc)
                _log.exception("handler failed", subject=subject, request_id=ctx.request_id)
                await self._respond(msg, b"", from_unexpected(exc, subject))
        log(
            "request",
            subject=subject,
            status=status,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
            request_id=ctx.request_id,
            principal=ctx.principal,
        )

    def _decode(self, data: bytes, request_type: type[Req]) -> Req:
        if len(data) > self.max_message_bytes:
            raise MessageTooLarge(len(data), self.max_message_bytes, "request")
        req = request_type()
        try:
            req.ParseFromString(data)
        except DecodeError as exc:
            raise MalformedMessage(request_type.DESCRIPTOR.full_name, str(exc)) from None
        return req

    async def _respond(self, msg: Msg, body: bytes, err: PachError | None) -> None:
        if not msg.reply:
            return
        headers = {H_ERROR: json.dumps(to_wire(err), default=str)} if err else None
        try:
            await self._nc.publish(msg.reply, body, headers=headers)
        except nats.errors.Error as exc:
            _log.warning("reply not sent", subject=msg.subject, error=str(exc))

    async def listen(
        self,
        name: str,
        message_type: type[Req],
        handler: Callable[[Req, Context], Awaitable[Message | None]],
    ) -> None:
        """Take every ``note.<service>.<name>`` published, in every replica
        (no queue group): what replicas tell each other. A note that does not
        decode, or whose handler fails, is logged and dropped. What the
        handler returns answers a ``survey`` (a plain note wants none)."""
        subject = subject_for("note", self.service, name)

        async def on_msg(msg: Msg) -> None:
            headers = msg.headers or {}
            ctx = Context(
                principal=headers.get(H_PRINCIPAL, ""),
                request_id=headers.get(H_REQUEST_ID, ""),
                subject=subject,
            )
            try:
                answer = await handler(self._decode(msg.data, message_type), ctx)
                if answer is not None and msg.reply:
                    await self._nc.publish(msg.reply, answer.SerializeToString())
            except Exception as exc:
                _log.warning("note dropped", subject=subject, error=repr(exc))

        self._subs.append(await self._nc.subscribe(subject, cb=on_msg))
        await self._nc.flush()

    async def notify(
        self, service: str, name: str, message: Message, *, principal: str = ""
    ) -> None:
        """Publish ``note.<service>.<name>`` to every replica listening
        (fire and forget: a replica that is down misses it)."""
        subject = subject_for("note", service, name)
        body = message.SerializeToString()
        if len(body) > self.max_message_bytes:
            raise MessageTooLarge(len(body), self.max_message_bytes, f"note to {subject}")
        try:
            await self._nc.publish(subject, body, headers={H_PRINCIPAL: principal})
        except nats.errors.Error as exc:
            raise Unavailable(f"cannot publish {subject}: {exc}") from None

    async def survey(
        self,
        service: str,
        name: str,
        message: Message,
        response_type: type[Resp],
        *,
        window: float,
        principal: str = "",
    ) -> list[Resp]:
        """Publish ``note.<service>.<name>`` and gather the answers of every
        listener that gives one within ``window`` seconds (a listener that
        is down, slow or has nothing to say is simply not among them)."""
        subject = subject_for("note", service, name)
        body = message.SerializeToString()
        if len(body) > self.max_message_bytes:
            raise MessageTooLarge(len(body), self.max_message_bytes, f"survey of {subject}")
        answers: list[Resp] = []

        async def on_answer(msg: Msg) -> None:
            try:
                answers.append(self._reply(msg, subject, response_type))
            except PachError as exc:
                _log.warning("survey answer dropped", subject=subject, error=str(exc))

        try:
            sub = await self._nc.subscribe(self._nc.new_inbox(), cb=on_answer)
            try:
                await self._nc.publish(
                    subject, body, reply=sub.subject, headers={H_PRINCIPAL: principal}
                )
                await asyncio.sleep(window)
            finally:
                await sub.unsubscribe()
        except nats.errors.Error as exc:
            raise Unavailable(f"cannot survey {subject}: {exc}") from None
        return answers

    # --- calling -----------------------------------------------------------

    async def request(
        self,
        service: str,
        name: str,
        request: Message,
        response_type: type[Resp],
        *,
        kind: str = "cmd",
        principal: str = "",
        timeout: float | None = None,
        request_id: str | None = None,
        auth_seq: int | None = None,
    ) -> Resp:
        subject = subject_for(kind, service, name)
        if self.hold is not None and name != "Health":
            # bounded by the hold window; a gRPC caller's deadline cancels it
            await self.hold(service)
        wait = self.timeout if timeout is None else timeout
        body = request.SerializeToString()
        if len(body) > self.max_message_bytes:
            raise MessageTooLarge(len(body), self.max_message_bytes, f"request to {subject}")
        headers: dict[str, str] = {
            H_PRINCIPAL: principal,
            H_REQUEST_ID: request_id or uuid.uuid4().hex,
        }
        if auth_seq is None and self.auth_seq_source is not None:
            auth_seq = self.auth_seq_source()
        if auth_seq is not None and auth_seq >= 0:  # negative: the gateway's own request
            headers[H_AUTH_SEQ] = str(auth_seq)
        with _tracer.start_as_current_span(subject, kind=trace.SpanKind.CLIENT):
            propagate.inject(headers)
            try:
                msg = await self._nc.request(subject, body, timeout=wait, headers=headers)
            except nats.errors.NoRespondersError:
                raise Unavailable(
                    f"no {service} service is serving {subject}", service=service
                ) from None
            except nats.errors.TimeoutError:
                raise DeadlineExceeded(
                    f"{subject} did not answer within {wait:g}s", subject=subject
                ) from None
            except nats.errors.ConnectionClosedError:
                raise Unavailable("the NATS connection is closed") from None
        return self._reply(msg, subject, response_type)

    def _reply(self, msg: Msg, subject: str, response_type: type[Resp]) -> Resp:
        err = (msg.headers or {}).get(H_ERROR)
        if err:
            try:
                data: Any = json.loads(err)
            except ValueError:
                raise MalformedMessage(f"error reply from {subject}", err[:200]) from None
            raise from_wire(data if isinstance(data, dict) else {"message": str(data)})
        reply = response_type()
        try:
            reply.ParseFromString(msg.data)
        except DecodeError as exc:
            raise MalformedMessage(f"reply from {subject}", str(exc)) from None
        return reply

    async def close(self) -> None:
        """Stop taking requests and let the in-flight ones finish."""
        for sub in self._subs:
            try:
                await sub.drain()  # type: ignore[no-untyped-call]
            except nats.errors.Error:
                with contextlib.suppress(nats.errors.Error):  # the connection is gone
                    await sub.unsubscribe()
        self._subs.clear()
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
