"""One error root for the whole project, its typed subclasses, and the one
table that maps them to gRPC status codes and HTTP statuses.

Every error carries the fields a caller needs (``repo``, ``expected`` …) in
``fields``; errors cross NATS as ``{"type": ..., "message": ..., "fields": ...}``
(see ``to_wire``/``from_wire``) and come back out as the same class.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # grpc is imported only when a status is asked for: pachctl's
    import grpc  # commands that contact no server never load it (start-up time)

MAX_MESSAGE_CHARS = 1024  # an error message's length, after escaping
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def one_line(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` as one printable line of at most ``limit`` characters: newlines,
    tabs and control characters escaped (``\\n``, ``\\x1b``), the rest cut."""
    if text.isprintable() and len(text) <= limit:
        return text
    out: list[str] = []
    size = 0
    for i, ch in enumerate(text):
        if ch.isprintable():
            piece = ch
        elif ch in "\n\r\t":
            piece = _ESCAPES[ch]
        else:
            n = ord(ch)
            piece = f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"
        if size + len(piece) > limit:
            rest = len(text) - i
            out.append(f"... ({rest} more characters)")
            break
        out.append(piece)
        size += len(piece)
    return "".join(out)


def shown(value: object, limit: int = 80) -> str:
    """A user's value for a message: quoted and escaped like ``repr``, cut to
    about ``limit`` characters (saying how long it really was)."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return one_line(repr(text), limit * 4 + 2)
    return one_line(repr(text[:limit]), limit * 4 + 2) + f"... ({len(text)} characters)"


class PachError(Exception):
    """Root of every error this project raises on purpose.

    Its message is always one line of bounded length (``one_line``)."""

    code: ClassVar[str] = "internal"

    def __init__(self, message: str, **fields: Any) -> None:
        message = one_line(str(message))
        super().__init__(message)
        self.message = message
        self.fields: dict[str, Any] = fields

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, **{self.fields!r})"


class InvalidArgument(PachError):
    """The request is malformed: a bad name, path, spec or value."""

    code = "invalid_argument"


class NotFound(PachError):
    code = "not_found"


class AlreadyExists(PachError):
    code = "already_exists"


class FailedPrecondition(PachError):
    """The request is well formed but the state does not allow it."""

    code = "failed_precondition"


class EventLogLost(FailedPrecondition):
    """The cluster's event log is gone, emptied or another cluster's: the
    service refuses to serve until the cluster is restored from a backup."""


class Unauthenticated(PachError):
    code = "unauthenticated"


class PermissionDenied(PachError):
    code = "permission_denied"


class Unavailable(PachError):
    """A dependency (NATS, a service, the object store) cannot be reached."""

    code = "unavailable"


class DeadlineExceeded(PachError):
    code = "deadline_exceeded"


class ResourceExhausted(PachError):
    """An answer or a request is larger than a limit allows (a unary reply
    over the gRPC message limit: the streaming RPC is the way)."""

    code = "resource_exhausted"


class DiskFull(ResourceExhausted):
    """A disk (or a quota on it) is full: ENOSPC / EDQUOT. Names the path."""

    code = "disk_full"

    def __init__(self, path: str, reason: str = "no space left on device") -> None:
        where = path or "a data directory"
        super().__init__(f"disk full: {reason} writing {shown(where, 200)}", path=path)


class Internal(PachError):
    code = "internal"


class Unimplemented(PachError):
    code = "unimplemented"


# --- specific errors -------------------------------------------------------


class ConcurrencyError(FailedPrecondition):
    """An append lost an optimistic-concurrency race: the aggregate moved on.

    Callers reload the aggregate and decide again."""

    code = "concurrency"

    def __init__(self, aggregate: str, expected: int, message: str | None = None) -> None:
        super().__init__(
            message or f"aggregate {aggregate} changed concurrently (expected version {expected})",
            aggregate=aggregate,
            expected=expected,
        )


class UnknownEventType(InvalidArgument):
    code = "unknown_event_type"

    def __init__(self, event_type: str) -> None:
        super().__init__(f"unknown event type {event_type!r}", event_type=event_type)


class MalformedMessage(InvalidArgument):
    code = "malformed_message"

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"malformed {what}: {reason}", what=what, reason=reason)


class MessageTooLarge(InvalidArgument):
    code = "message_too_large"

    def __init__(self, size: int, limit: int, what: str = "message") -> None:
        super().__init__(
            f"{what} is {size} bytes, over the limit of {limit} bytes",
            size=size,
            limit=limit,
            what=what,
        )


class UnknownCommand(NotFound):
    code = "unknown_command"

    def __init__(self, subject: str) -> None:
        super().__init__(f"no handler serves {subject!r}", subject=subject)


class InvalidActivationCode(InvalidArgument):
    """An enterprise activation code that is malformed, not signed by the
    key the cluster trusts, or expired."""

    code = "invalid_activation_code"


class InvalidIdToken(Unauthenticated):
    """An OpenID Connect ID token the cluster does not accept: malformed,
    signed by a key its provider does not publish, for another issuer or
    audience, expired, or not the one this login asked for (nonce)."""

    code = "invalid_id_token"


class ObjectNotFound(NotFound):
    code = "object_not_found"

    def __init__(self, key: str) -> None:
        super().__init__(f"object {key!r} not found", key=key)


class LimitExceeded(InvalidArgument):
    """A name, path, spec or message over one of the documented bounds
    (``libs.bounds``); names the limit and the offending value (cut)."""

    code = "limit_exceeded"

    def __init__(self, what: str, value: object, limit: int, unit: str, actual: int) -> None:
        super().__init__(
            f"{what} {shown(value)} is {actual} {unit}, over the limit of {limit} {unit}",
            what=what,
            limit=limit,
            actual=actual,
        )


_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full(exc: BaseException, path: str) -> DiskFull | None:
    """``exc`` as ``DiskFull`` naming ``path`` (the store or directory being
    written), when it is ENOSPC / EDQUOT; None otherwise."""
    if isinstance(exc, OSError) and exc.errno in _FULL:
        reason = "disk quota exceeded" if exc.errno == errno.EDQUOT else "no space left on device"
        return DiskFull(str(exc.filename or path), reason)
    return None


# JetStream's answers when its store is full ("insufficient resources",
# "insufficient storage resources available"), recognised by their codes
# so that this module needs no NATS import.
_JETSTREAM_FULL = (10023, 10047)


def from_unexpected(exc: BaseException, where: str = "") -> PachError:
    """An exception nobody raised on purpose as the ``PachError`` a caller gets:
    a full disk is ``DiskFull`` (naming the path), a ``PachError`` stays what
    it is, anything else is ``Internal`` with a one-line message."""
    if isinstance(exc, PachError):
        return exc
    full = disk_full(exc, where)
    if full is not None:
        return full
    if getattr(exc, "err_code", None) in _JETSTREAM_FULL:
        reason = str(getattr(exc, "description", "") or "insufficient storage")
        return DiskFull("the event log (JetStream store)", reason)
    if isinstance(exc, RecursionError):
        return InvalidArgument(f"{where or 'request'} is nested too deeply to process")
    prefix = f"internal error in {where}: " if where else "internal error: "
    return Internal(prefix + f"{type(exc).__name__}: {exc}")


# --- the one mapping table -------------------------------------------------

_GRPC: dict[type[PachError], str] = {  # grpc.StatusCode's member names
    InvalidArgument: "INVALID_ARGUMENT",
    NotFound: "NOT_FOUND",
    AlreadyExists: "ALREADY_EXISTS",
    FailedPrecondition: "FAILED_PRECONDITION",
    Unauthenticated: "UNAUTHENTICATED",
    PermissionDenied: "PERMISSION_DENIED",
    Unavailable: "UNAVAILABLE",
    DeadlineExceeded: "DEADLINE_EXCEEDED",
    Unimplemented: "UNIMPLEMENTED",
    ResourceExhausted: "RESOURCE_EXHAUSTED",
    DiskFull: "RESOURCE_EXHAUSTED",
    ConcurrencyError: "ABORTED",
    Internal: "INTERNAL",
    PachError: "INTERNAL",
}

_HTTP: dict[type[PachError], int] = {
    InvalidArgument: 400,
    NotFound: 404,
    AlreadyExists: 409,
    FailedPrecondition: 412,
    Unauthenticated: 401,
    PermissionDenied: 403,
    Unavailable: 503,
    DeadlineExceeded: 504,
    Unimplemented: 501,
    ResourceExhausted: 413,
    DiskFull: 507,
    ConcurrencyError: 409,
    Internal: 500,
    PachError: 500,
}


def _lookup(table: dict[type[PachError], Any], err: PachError) -> Any:
    for cls in type(err).__mro__:
        if cls in table:
            return table[cls]
    return table[PachError]


def grpc_status(err: PachError) -> grpc.StatusCode:
    import grpc

    return grpc.StatusCode[_lookup(_GRPC, err)]


def http_status(err: PachError) -> int:
    return _lookup(_HTTP, err)  # type: ignore[no-any-return]


# --- the wire form ---------------------------------------------------------


def _all_subclasses(cls: type[PachError]) -> list[type[PachError]]:
    out: list[type[PachError]] = [cls]
    for sub in cls.__subclasses__():
        out.extend(_all_subclasses(sub))
    return out


def to_wire(err: PachError) -> dict[str, Any]:
    return {"type": type(err).__name__, "message": err.message, "fields": err.fields}


def from_wire(data: dict[str, Any]) -> PachError:
    """Rebuild an error sent by ``to_wire``; unknown types fall back to the
    nearest base by ``code`` so a newer server never crashes an older caller."""
    name = str(data.get("type", "PachError"))
    message = str(data.get("message", "unknown error"))
    fields = data.get("fields") or {}
    by_name = {c.__name__: c for c in _all_subclasses(PachError)}
    cls = by_name.get(name, PachError)
    err = PachError.__new__(cls)
    PachError.__init__(err, message, **fields)
    return err
