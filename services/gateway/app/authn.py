"""Authentication at the gateway: the caller's token (gRPC metadata
``authn-token``, HTTP ``authn-token`` or ``Authorization: Bearer``) is
checked against the gateway's own auth view (token hashes, no round trip)
and becomes the subject the services authorize.

With auth not active every call goes on as before, with no principal. Every
request the gateway sends carries the sequence of the last auth event its
view applied (``Pach-Auth-Seq``), so a service decides on auth state at
least as new as the gateway's; after an
auth or enterprise change the gateway catches its view up before it
answers, so the change holds from the caller's next call on."""

from __future__ import annotations

import time

from libs.api.auth import auth_pb2 as auth
from libs.authz.state import ANYONE
from libs.authz.view import AuthView
from libs.bus import Bus
from libs.errors import FailedPrecondition, Unauthenticated

# auth.API RPCs that change state (everything else only reads).
AUTH_CHANGES = frozenset(
    {
        "Activate",
        "Deactivate",
        "SetConfiguration",
        "ModifyAdmins",
        "Authenticate",
        "SetScope",
        "SetACL",
        "GetAuthToken",
        "ExtendAuthToken",
        "RevokeAuthToken",
        "SetGroupsForUser",
        "ModifyMembers",
        "GetOneTimePassword",
    }
)
# What only reads (``qry.*``); everything else is a command.
READS = frozenset(
    {"GetConfiguration", "GetAdmins", "Authorize", "GetScope", "GetACL", "GetGroups", "GetUsers"}
    | {"GetState", "WhoAmI"}
)


ENTERPRISE_CHANGES = frozenset({"Activate", "Deactivate"})


def rpc_kind(name: str, changes: frozenset[str]) -> str:
    """The bus kind of auth or enterprise RPC ``name``."""
    return "cmd" if name in changes or name not in READS else "qry"


class Authenticator:
    def __init__(self, view: AuthView) -> None:
        self.view = view

    def attach(self, bus: Bus) -> None:
        """Mark every request ``bus`` sends as a client's (see module doc)."""
        bus.auth_seq_source = lambda: self.view.auth_position

    def subject(self, token: str) -> str:
        """The subject ``token`` stands for while auth is active ("" when
        there is no token: the services refuse what needs one); "" with auth
        not active. A token that is not live is refused here."""
        state = self.view.state
        if not state.active:
            return ""
        if not token:
            return ""
        return state.subject_for(token, self.view.now())

    def whoami(self, token: str) -> auth.WhoAmIResponse:
        """``WhoAmI`` of the caller holding ``token`` (answered from the
        view: it is about the token, which only the gateway sees)."""
        state = self.view.state
        if not state.active:
            raise FailedPrecondition(
                "the auth service is not activated: run 'pachctl auth activate'"
            )
        subject = self.subject(token)
        if not subject:
            raise Unauthenticated("not logged in: run 'pachctl auth login'")
        rec = state.token(token, time.time())
        ttl = max(int(rec.expires - time.time()), 0) if rec and rec.expires else 0
        state.check(subject, ANYONE, time.time())  # admin-only state: admins only
        return auth.WhoAmIResponse(username=subject, is_admin=subject in state.admins, ttl=ttl)

    async def changed(self) -> None:
        """An auth or enterprise change was made: see it before answering."""
        await self.view.sync()
