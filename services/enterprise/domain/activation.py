"""The cluster's enterprise activation: one aggregate
(``ev.enterprise.activation.cluster``). Pure: the code's signature is checked
before ``activate`` decides (``libs.activation_code``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from google.protobuf.message import Message

from libs.activation_code import Claims
from libs.api.events import enterprise_pb2 as ev
from libs.errors import InvalidActivationCode
from libs.events.envelope import AggregateRef

CLUSTER = "cluster"


@dataclass(frozen=True)
class Activation:
    code_id: str = ""
    customer: str = ""
    expires: int = 0  # unix seconds; 0: never activated

    def state(self, now: float) -> str:
        if not self.expires:
            return "NONE"
        return "ACTIVE" if self.expires > now else "EXPIRED"


def ref(name: str = CLUSTER) -> AggregateRef:
    return AggregateRef("enterprise", "activation", name)


def evolve(state: Activation, event: Message) -> Activation:
    if isinstance(event, ev.ActivationCodeAccepted):
        return Activation(event.code_id, event.customer, event.expires_unix)
    if isinstance(event, ev.ActivationCleared):
        return Activation()
    return state


def activate(
    claims: Claims, requested: int, now: float
) -> Callable[[Activation], Sequence[Message]]:
    """Accept a verified code; ``requested`` (unix seconds, 0: none) may
    only shorten the code's own expiry."""
    if requested and requested <= now:
        raise InvalidActivationCode(f"the requested expiry {requested} is in the past")
    expires = min(claims.expires, requested) if requested else claims.expires

    def decide(_: Activation) -> Sequence[Message]:
        return [
            ev.ActivationCodeAccepted(
                code_id=claims.id, customer=claims.customer, expires_unix=expires
            )
        ]

    return decide


def deactivate(state: Activation) -> Sequence[Message]:
    return [ev.ActivationCleared()] if state.expires else []
