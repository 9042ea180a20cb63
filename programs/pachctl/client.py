"""A gRPC channel to pachd, and the one translation of gRPC failures into
errors pachctl prints as one line."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import grpc

from libs.errors import PachError
from programs.pachctl.address import Address
from programs.pachctl.config import session_token

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 5.0
# Calls that take as long as their work does: streams, finish-commit.
LONG_TIMEOUT_S = 24 * 3600.0


class CannotReach(PachError):
    code = "unavailable"

    def __init__(self, address: Address, reason: str) -> None:
        super().__init__(f"cannot reach pachd at {address}: {reason}", address=str(address))


class NoAnswer(PachError):
    """pachd was reached but gave no answer in time: the request may still
    have been applied, so this must not read as "cannot reach"."""

    code = "deadline_exceeded"

    def __init__(self, address: Address, timeout: float) -> None:
        super().__init__(
            f"pachd at {address} did not answer within {timeout:g}s; the request may "
            "still have been applied (check before retrying)",
            address=str(address),
        )


class ServerError(PachError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{details or code.name.lower()} ({code.name})", grpc_code=code.name)
        self.grpc_code = code

    @property
    def unimplemented(self) -> bool:
        return self.grpc_code == grpc.StatusCode.UNIMPLEMENTED


def _reason(details: str) -> str:
    lowered = details.lower()
    for needle, reason in (
        ("connection refused", "connection refused"),
        ("deadline", "timed out"),
        ("name resolution", "unknown host"),
        ("dns resolution", "unknown host"),
        ("lookup failed", "unknown host"),
        ("no route to host", "no route to host"),
    ):
        if needle in lowered:
            return reason
    return details or "unavailable"


# What gRPC's own transport (not pachd) says when it cannot get an answer.
_TRANSPORT = (
    "failed to connect to all addresses",
    "dns resolution failed",
    "socket closed",
    "connection reset",
    "broken pipe",
    "recvmsg",
    "endpoint read failed",
)


def _transport(details: str) -> bool:
    lowered = details.lower()
    return not details or any(needle in lowered for needle in _TRANSPORT)


class _Token(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamStreamClientInterceptor,  # type: ignore[type-arg]
):
    """Sends the session token (metadata ``authn-token``) with every call."""

    def __init__(self, token: str) -> None:
        self.token = token

    def _details(self, details: Any) -> Any:
        metadata = [*(details.metadata or ()), ("authn-token", self.token)]
        return details._replace(metadata=metadata)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


class Pachd:
    """A connection to pachd; use as a context manager. Calls carry the
    session token of pachctl's config (``auth login``), unless ``anonymous``."""

    def __init__(
        self, address: Address, timeout: float = DEFAULT_TIMEOUT_S, *, anonymous: bool = False
    ) -> None:
        self.address = address
        self.timeout = timeout
        self._raw = grpc.insecure_channel(address.target)
        token = "" if anonymous else session_token()
        self.token = token
        self.channel = grpc.intercept_channel(self._raw, _Token(token)) if token else self._raw

    def __enter__(self) -> Pachd:
        return self

    def __exit__(self, *_: object) -> None:
        self._raw.close()

    def call(self, rpc: Callable[..., T], request: object) -> T:
        try:
            return rpc(request, timeout=self.timeout)
        except grpc.RpcError as err:
            raise self.translate(err) from None

    def drain(self, replies: Iterable[Any], write: Callable[[bytes], object]) -> None:
        """Consume a server stream of BytesValue messages into ``write``."""
        try:
            for reply in replies:
                write(reply.value)
        except grpc.RpcError as err:
            raise self.translate(err) from None

    def stream(self, rpc: Callable[..., Iterable[T]], request: object) -> Iterator[T]:
        """The replies of a server stream, one at a time, failures translated."""
        try:
            yield from rpc(request, timeout=self.timeout)
        except grpc.RpcError as err:
            raise self.translate(err) from None

    def _connected(self) -> bool:
        """Whether the channel reaches pachd now (after a call ran out of time)."""
        try:
            grpc.channel_ready_future(self.channel).result(timeout=1.0)
        except grpc.FutureTimeoutError:
            return False
        return True

    def translate(self, err: grpc.RpcError) -> PachError:
        """A failed call as the error pachctl reports (for commands that call
        a stub themselves, e.g. to read trailing metadata or stream)."""
        code: grpc.StatusCode = err.code()  # type: ignore[attr-defined]
        details: str = err.details() or ""  # type: ignore[attr-defined]
        if code == grpc.StatusCode.DEADLINE_EXCEEDED and self._connected():
            return NoAnswer(self.address, self.timeout)
        if code == grpc.StatusCode.DEADLINE_EXCEEDED or (
            code == grpc.StatusCode.UNAVAILABLE and _transport(details)
        ):
            return CannotReach(self.address, _reason(details or code.name))
        # UNAVAILABLE from pachd itself: something it depends on (a URL it
        # fetches, NATS, the object store) failed; its message says which.
        return ServerError(code, details)
