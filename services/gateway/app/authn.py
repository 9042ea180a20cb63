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

from libs.authz.view import AuthView
from libs.bus import Bus


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

    async def changed(self) -> None:
        """An auth or enterprise change was made: see it before answering."""
        await self.view.sync()
