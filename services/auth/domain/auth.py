"""The auth aggregates and what their commands decide. Pure.

- the cluster (``ev.auth.cluster.auth``): active or not, the admins, the
  activation generation (deactivating ends every token of the previous one)
  and the configuration;
- a token (``ev.auth.token.<sha256 hex>``): whose it is, until when, and
  whether it was revoked or, for a one-time password, redeemed;
- a repo's ACL (``ev.auth.acl.<repo>``) and a group (``ev.auth.group.<g>``):
  their events carry everything, so their state is only a version."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from google.protobuf.message import Message

from libs.api.events import auth_pb2 as ev
from libs.errors import FailedPrecondition, InvalidArgument, NotFound
from libs.events.envelope import AggregateRef

# --- the cluster -------------------------------------------------------------


@dataclass(frozen=True)
class Cluster:
    active: bool = False
    admins: frozenset[str] = frozenset()
    generation: int = 0


def cluster_ref(_: str = "auth") -> AggregateRef:
    return AggregateRef("auth", "cluster", "auth")


def evolve_cluster(state: Cluster, event: Message) -> Cluster:
    if isinstance(event, ev.AuthActivated):
        return Cluster(True, frozenset({event.admin}), state.generation + 1)
    if isinstance(event, ev.AuthDeactivated):
        return Cluster(False, frozenset(), state.generation)
    if isinstance(event, ev.AdminsModified):
        return replace(state, admins=(state.admins | set(event.add)) - set(event.remove))
    return state


def not_active() -> FailedPrecondition:
    return FailedPrecondition("the auth service is not activated: run 'pachctl auth activate'")


def activate(admin: str) -> Callable[[Cluster], Sequence[Message]]:
    def decide(state: Cluster) -> Sequence[Message]:
        if state.active:
            raise FailedPrecondition("the auth service is already activated")
        return [ev.AuthActivated(admin=admin)]

    return decide


def deactivate(state: Cluster) -> Sequence[Message]:
    if not state.active:
        raise not_active()
    return [ev.AuthDeactivated()]


def modify_admins(add: list[str], remove: list[str]) -> Callable[[Cluster], Sequence[Message]]:
    def decide(state: Cluster) -> Sequence[Message]:
        if not state.active:
            raise not_active()
        after = (state.admins | set(add)) - set(remove)
        if not after:
            raise FailedPrecondition("cannot remove every admin: the cluster needs at least one")
        if after == state.admins:
            return []
        return [ev.AdminsModified(add=sorted(set(add)), remove=sorted(set(remove)))]

    return decide


def set_configuration(config: bytes) -> Callable[[Cluster], Sequence[Message]]:
    def decide(state: Cluster) -> Sequence[Message]:
        if not state.active:
            raise not_active()
        return [ev.ConfigurationSet(configuration=config)]

    return decide


# --- tokens ------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    exists: bool = False
    subject: str = ""
    expires: int = 0
    one_time: bool = False
    generation: int = 0
    revoked: bool = False
    redeemed: bool = False

    def live(self, now: float, generation: int) -> bool:
        return (
            self.exists
            and not self.revoked
            and not self.redeemed
            and self.generation == generation
            and (not self.expires or self.expires > now)
        )


def token_ref(token_hash: str) -> AggregateRef:
    return AggregateRef("auth", "token", token_hash)


def evolve_token(state: Token, event: Message) -> Token:
    if isinstance(event, ev.TokenIssued):
        return Token(True, event.subject, event.expires_unix, event.one_time, event.generation)
    if isinstance(event, ev.TokenExtended):
        return replace(state, expires=event.expires_unix)
    if isinstance(event, ev.TokenRevoked):
        return replace(state, revoked=True)
    if isinstance(event, ev.OneTimePasswordRedeemed):
        return replace(state, redeemed=True)
    return state


def issue(
    subject: str, expires: int, source: int, generation: int, *, one_time: bool = False
) -> Callable[[Token], Sequence[Message]]:
    def decide(state: Token) -> Sequence[Message]:
        if state.exists:
            raise FailedPrecondition("token collision: try again")
        return [
            ev.TokenIssued(
                subject=subject,
                expires_unix=expires,
                source=source,
                one_time=one_time,
                generation=generation,
            )
        ]

    return decide


def _unknown_token() -> NotFound:
    return NotFound("token not found: it is unknown, expired or revoked")


def revoke(now: float, generation: int) -> Callable[[Token], Sequence[Message]]:
    def decide(state: Token) -> Sequence[Message]:
        if not state.live(now, generation):
            raise _unknown_token()
        return [ev.TokenRevoked()]

    return decide


def extend(expires: int, now: float, generation: int) -> Callable[[Token], Sequence[Message]]:
    def decide(state: Token) -> Sequence[Message]:
        if not state.live(now, generation) or state.one_time:
            raise _unknown_token()
        if state.expires == 0 or expires <= state.expires:
            raise InvalidArgument("a token's expiry can only be extended")
        return [ev.TokenExtended(expires_unix=expires)]

    return decide


def redeem(now: float, generation: int) -> Callable[[Token], Sequence[Message]]:
    def decide(state: Token) -> Sequence[Message]:
        if not state.one_time or not state.live(now, generation):
            raise _unknown_token()
        return [ev.OneTimePasswordRedeemed()]

    return decide


# --- ACLs and groups -----------------------------------------------------------


def acl_ref(repo: str) -> AggregateRef:
    return AggregateRef("auth", "acl", repo)


def group_ref(group: str) -> AggregateRef:
    return AggregateRef("auth", "group", group)


def evolve_version(state: int, _: Message) -> int:
    return state + 1


def always(*events: Message) -> Callable[[int], Sequence[Message]]:
    def decide(_: int) -> Sequence[Message]:
        return list(events)

    return decide
