"""auth.API on the bus (``cmd.auth.*`` / ``qry.auth.*``): activation, admins,
tokens and one-time passwords, ACLs and groups.

Commands decide on their aggregate and return once this service's auth view
shows the result (read-your-writes); the callers' rights come from the same
view. A token leaves this service once, in the reply that issues it: the
log holds only its SHA-256."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from google.protobuf.message import Message

from libs.api.auth import auth_pb2 as auth
from libs.api.events import auth_pb2 as aev
from libs.api.internal import auth_service_pb2 as internal
from libs.authz.state import NONE, OWNER, token_hash
from libs.authz.view import AuthView
from libs.bus import Bus, Context
from libs.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from libs.events import AggregateCache, EventStore
from libs.events.envelope import AggregateRef
from services.auth.domain import auth as domain
from services.auth.domain.subjects import canonical

S = TypeVar("S")

DAY = 24 * 3600
SESSION_TTL_S = 30 * DAY  # Authenticate and activation tokens
OTP_TTL_S = 5 * 60
MAX_TTL_S = 10 * 365 * DAY
OIDC_PREFIX = "oidc:"  # users of the cluster's OpenID Connect provider


def new_token() -> str:
    return secrets.token_hex(32)  # 256 random bits


class Auth:
    def __init__(self, events: EventStore, view: AuthView) -> None:
        self.view = view
        self.cluster: AggregateCache[domain.Cluster] = AggregateCache(
            events, initial=domain.Cluster, evolve=domain.evolve_cluster
        )
        self.tokens: AggregateCache[domain.Token] = AggregateCache(
            events, initial=domain.Token, evolve=domain.evolve_token
        )
        self.versions: AggregateCache[int] = AggregateCache(
            events, initial=int, evolve=domain.evolve_version
        )

    async def register(self, bus: Bus) -> None:
        handlers: list[tuple[str, type[Message], Callable[..., object]]] = [
            ("Activate", auth.ActivateRequest, self.activate),
            ("Deactivate", auth.DeactivateRequest, self.deactivate),
            ("GetConfiguration", auth.GetConfigurationRequest, self.get_configuration),
            ("SetConfiguration", auth.SetConfigurationRequest, self.set_configuration),
            ("GetAdmins", auth.GetAdminsRequest, self.get_admins),
            ("ModifyAdmins", auth.ModifyAdminsRequest, self.modify_admins),
            ("Authenticate", auth.AuthenticateRequest, self.authenticate),
            ("Authorize", auth.AuthorizeRequest, self.authorize),
            ("GetScope", auth.GetScopeRequest, self.get_scope),
            ("SetScope", auth.SetScopeRequest, self.set_scope),
            ("GetACL", auth.GetACLRequest, self.get_acl),
            ("SetACL", auth.SetACLRequest, self.set_acl),
            ("GetAuthToken", auth.GetAuthTokenRequest, self.get_auth_token),
            ("ExtendAuthToken", auth.ExtendAuthTokenRequest, self.extend_auth_token),
            ("RevokeAuthToken", auth.RevokeAuthTokenRequest, self.revoke_auth_token),
            ("SetGroupsForUser", auth.SetGroupsForUserRequest, self.set_groups_for_user),
            ("ModifyMembers", auth.ModifyMembersRequest, self.modify_members),
            ("GetGroups", auth.GetGroupsRequest, self.get_groups),
            ("GetUsers", auth.GetUsersRequest, self.get_users),
            ("GetOneTimePassword", auth.GetOneTimePasswordRequest, self.get_one_time_password),
            ("IssueIdentityToken", internal.IssueIdentityToken, self.issue_identity_token),
        ]
        for name, request_type, handler in handlers:
            kind = "qry" if name in READS else "cmd"
            await bus.serve(name, request_type, handler, kind=kind)  # type: ignore[arg-type]

    # --- helpers -------------------------------------------------------------

    async def _run(
        self,
        cache: AggregateCache[S],
        ref: AggregateRef,
        decide: Callable[[S], Sequence[Message]],
        ctx: Context,
    ) -> S:
        done = await cache.execute(
            ref, decide, principal=ctx.principal, correlation_id=ctx.request_id
        )
        if done.appended is not None:
            await self.view.wait_for(done.appended.position.seq)
        return done.state

    async def _active(self) -> domain.Cluster:
        state = (await self.cluster.load(domain.cluster_ref())).state
        if not state.active:
            raise domain.not_active()
        return state

    def _is_admin(self, subject: str) -> bool:
        return subject in self.view.state.admins

    async def _issue(
        self, subject: str, ttl: int, source: int, ctx: Context, *, one_time: bool = False
    ) -> str:
        cluster = await self._active()
        token = new_token()
        expires = int(time.time()) + ttl if ttl else 0
        await self._run(
            self.tokens,
            domain.token_ref(token_hash(token)),
            domain.issue(subject, expires, source, cluster.generation, one_time=one_time),
            ctx,
        )
        return token

    # --- activation ------------------------------------------------------------

    async def activate(self, req: auth.ActivateRequest, ctx: Context) -> auth.ActivateResponse:
        if req.github_token and not req.subject:
            raise InvalidArgument(
                "GitHub tokens are not accepted here: activate with an initial admin "
                "(pachctl auth activate --initial-admin=robot:<name>)"
            )
        if not req.subject:
            raise InvalidArgument("activate needs the initial admin (--initial-admin)")
        admin = canonical(req.subject, "initial admin")
        if self.view.state.enterprise_state(time.time()) != "ACTIVE":
            await self.view.sync()
            if self.view.state.enterprise_state(time.time()) != "ACTIVE":
                raise FailedPrecondition(
                    "enterprise features are not active: run 'pachctl enterprise activate' first"
                )
        await self._run(self.cluster, domain.cluster_ref(), domain.activate(admin), ctx)
        token = await self._issue(admin, SESSION_TTL_S, auth.TokenInfo.AUTHENTICATE, ctx)
        return auth.ActivateResponse(pach_token=token)

    async def deactivate(
        self, req: auth.DeactivateRequest, ctx: Context
    ) -> auth.DeactivateResponse:
        await self._run(self.cluster, domain.cluster_ref(), domain.deactivate, ctx)
        return auth.DeactivateResponse()

    async def get_configuration(
        self, req: auth.GetConfigurationRequest, ctx: Context
    ) -> auth.GetConfigurationResponse:
        await self._active()
        config = auth.AuthConfig()
        config.ParseFromString(self.view.state.configuration)
        return auth.GetConfigurationResponse(configuration=config)

    async def set_configuration(
        self, req: auth.SetConfigurationRequest, ctx: Context
    ) -> auth.SetConfigurationResponse:
        config = req.configuration.SerializeToString()
        await self._run(self.cluster, domain.cluster_ref(), domain.set_configuration(config), ctx)
        return auth.SetConfigurationResponse()

    # --- admins ----------------------------------------------------------------

    async def get_admins(self, req: auth.GetAdminsRequest, ctx: Context) -> auth.GetAdminsResponse:
        state = await self._active()
        return auth.GetAdminsResponse(admins=sorted(state.admins))

    async def modify_admins(
        self, req: auth.ModifyAdminsRequest, ctx: Context
    ) -> auth.ModifyAdminsResponse:
        add = [canonical(s, "admin") for s in req.add]
        remove = [canonical(s, "admin") for s in req.remove]
        await self._run(self.cluster, domain.cluster_ref(), domain.modify_admins(add, remove), ctx)
        return auth.ModifyAdminsResponse()

    # --- authentication ----------------------------------------------------------

    async def authenticate(
        self, req: auth.AuthenticateRequest, ctx: Context
    ) -> auth.AuthenticateResponse:
        cluster = await self._active()
        if not req.one_time_password:
            raise InvalidArgument(
                "authenticate needs a one-time password or an ID token of the cluster's "
                "OIDC provider (in github_token, checked by the gateway)"
            )
        otp = self.tokens
        ref = domain.token_ref(token_hash(req.one_time_password))
        state = await self._run(otp, ref, domain.redeem(time.time(), cluster.generation), ctx)
        token = await self._issue(state.subject, SESSION_TTL_S, auth.TokenInfo.AUTHENTICATE, ctx)
        return auth.AuthenticateResponse(pach_token=token)

    async def get_one_time_password(
        self, req: auth.GetOneTimePasswordRequest, ctx: Context
    ) -> auth.GetOneTimePasswordResponse:
        subject = canonical(req.subject) if req.subject else ctx.principal
        self._self_or_admin(subject, ctx, "get a one-time password")
        code = await self._issue(subject, OTP_TTL_S, auth.TokenInfo.GET_TOKEN, ctx, one_time=True)
        return auth.GetOneTimePasswordResponse(code=code)

    async def issue_identity_token(
        self, req: internal.IssueIdentityToken, ctx: Context
    ) -> internal.IdentityToken:
        """A session token for a subject the gateway's OIDC login verified.
        Only the gateway's own request (no client's) may ask: the guard has
        no rule for it, and this refuses a forwarded one too."""
        if ctx.external:
            raise PermissionDenied("IssueIdentityToken is served for the gateway's OIDC login only")
        subject = canonical(req.subject, "identity")
        if not subject.startswith(OIDC_PREFIX):
            raise InvalidArgument(f"an identity token is for an oidc: subject, not {subject!r}")
        token = await self._issue(subject, SESSION_TTL_S, auth.TokenInfo.AUTHENTICATE, ctx)
        return internal.IdentityToken(pach_token=token)

    def _self_or_admin(self, subject: str, ctx: Context, what: str) -> None:
        if not subject:
            raise InvalidArgument(f"{what}: a subject is required")
        if ctx.external and subject != ctx.principal and not self._is_admin(ctx.principal):
            raise PermissionDenied(
                f"{ctx.principal} is not authorized to {what} for {subject}: admins only",
                subject=ctx.principal,
            )

    async def get_auth_token(
        self, req: auth.GetAuthTokenRequest, ctx: Context
    ) -> auth.GetAuthTokenResponse:
        subject = canonical(req.subject) if req.subject else ctx.principal
        self._self_or_admin(subject, ctx, "get an auth token")
        if req.ttl < 0 or req.ttl > MAX_TTL_S:
            raise InvalidArgument(f"ttl must be from 0 to {MAX_TTL_S} seconds, got {req.ttl}")
        ttl = int(req.ttl)
        if not ttl and ctx.external and not self._is_admin(ctx.principal):
            ttl = SESSION_TTL_S  # only admins mint tokens that never expire
        token = await self._issue(subject, ttl, auth.TokenInfo.GET_TOKEN, ctx)
        return auth.GetAuthTokenResponse(token=token, subject=subject)

    async def extend_auth_token(
        self, req: auth.ExtendAuthTokenRequest, ctx: Context
    ) -> auth.ExtendAuthTokenResponse:
        cluster = await self._active()
        if req.ttl <= 0 or req.ttl > MAX_TTL_S:
            raise InvalidArgument(f"ttl must be from 1 to {MAX_TTL_S} seconds, got {req.ttl}")
        now = time.time()
        await self._run(
            self.tokens,
            domain.token_ref(token_hash(req.token)),
            domain.extend(int(now) + int(req.ttl), now, cluster.generation),
            ctx,
        )
        return auth.ExtendAuthTokenResponse()

    async def revoke_auth_token(
        self, req: auth.RevokeAuthTokenRequest, ctx: Context
    ) -> auth.RevokeAuthTokenResponse:
        cluster = await self._active()
        if not req.token:
            raise InvalidArgument("revoke needs the token to revoke")
        ref = domain.token_ref(token_hash(req.token))
        token = (await self.tokens.load(ref)).state
        if not token.live(time.time(), cluster.generation):
            raise NotFound("token not found: it is unknown, expired or revoked")
        if ctx.external and token.subject != ctx.principal and not self._is_admin(ctx.principal):
            raise PermissionDenied(
                f"{ctx.principal} is not authorized to revoke a token of another subject",
                subject=ctx.principal,
            )
        await self._run(self.tokens, ref, domain.revoke(time.time(), cluster.generation), ctx)
        return auth.RevokeAuthTokenResponse()

    # --- authorization -----------------------------------------------------------

    async def authorize(self, req: auth.AuthorizeRequest, ctx: Context) -> auth.AuthorizeResponse:
        await self._active()
        if not req.repo:
            raise InvalidArgument("authorize needs a repo")
        return auth.AuthorizeResponse(
            authorized=self.view.state.scope(ctx.principal, req.repo) >= req.scope
        )

    async def get_scope(self, req: auth.GetScopeRequest, ctx: Context) -> auth.GetScopeResponse:
        await self._active()
        subject = canonical(req.username) if req.username else ctx.principal
        state = self.view.state
        return auth.GetScopeResponse(
            scopes=[auth.Scope.ValueType(state.scope(subject, r)) for r in req.repos]
        )

    async def set_scope(self, req: auth.SetScopeRequest, ctx: Context) -> auth.SetScopeResponse:
        await self._active()
        if not req.repo:
            raise InvalidArgument("set scope needs a repo")
        if req.scope not in (NONE, 1, 2, OWNER):
            raise InvalidArgument(f"bad scope {req.scope}: none, reader, writer or owner")
        subject = canonical(req.username, "username")
        event = aev.ScopeSet(subject=subject, scope=req.scope)
        await self._run(self.versions, domain.acl_ref(req.repo), domain.always(event), ctx)
        return auth.SetScopeResponse()

    async def get_acl(self, req: auth.GetACLRequest, ctx: Context) -> auth.GetACLResponse:
        await self._active()
        if not req.repo:
            raise InvalidArgument("get ACL needs a repo")
        acl = self.view.state.acls.get(req.repo, {})
        out = auth.GetACLResponse()
        for subject, scope in sorted(acl.items()):
            entry = auth.ACLEntry(username=subject, scope=auth.Scope.ValueType(scope))
            (out.robot_entries if subject.startswith("robot:") else out.entries).append(entry)
        return out

    async def set_acl(self, req: auth.SetACLRequest, ctx: Context) -> auth.SetACLResponse:
        await self._active()
        if not req.repo:
            raise InvalidArgument("set ACL needs a repo")
        entries = {canonical(e.username, "username"): int(e.scope) for e in req.entries}
        event = aev.AclReplaced(entries=entries)
        await self._run(self.versions, domain.acl_ref(req.repo), domain.always(event), ctx)
        return auth.SetACLResponse()

    # --- groups --------------------------------------------------------------------

    async def set_groups_for_user(
        self, req: auth.SetGroupsForUserRequest, ctx: Context
    ) -> auth.SetGroupsForUserResponse:
        await self._active()
        user = canonical(req.username, "username")
        wanted = set(req.groups)
        have = set(self.view.state.groups_of(user))
        for group in sorted(wanted | have):
            if (group in wanted) != (group in have):
                add, remove = ([user], []) if group in wanted else ([], [user])
                event = aev.GroupMembersModified(add=add, remove=remove)
                await self._run(self.versions, domain.group_ref(group), domain.always(event), ctx)
        return auth.SetGroupsForUserResponse()

    async def modify_members(
        self, req: auth.ModifyMembersRequest, ctx: Context
    ) -> auth.ModifyMembersResponse:
        await self._active()
        if not req.group:
            raise InvalidArgument("modify members needs a group")
        event = aev.GroupMembersModified(
            add=[canonical(u, "username") for u in req.add],
            remove=[canonical(u, "username") for u in req.remove],
        )
        await self._run(self.versions, domain.group_ref(req.group), domain.always(event), ctx)
        return auth.ModifyMembersResponse()

    async def get_groups(self, req: auth.GetGroupsRequest, ctx: Context) -> auth.GetGroupsResponse:
        await self._active()
        user = canonical(req.username) if req.username else ctx.principal
        self._self_or_admin(user, ctx, "list the groups")
        return auth.GetGroupsResponse(groups=self.view.state.groups_of(user))

    async def get_users(self, req: auth.GetUsersRequest, ctx: Context) -> auth.GetUsersResponse:
        await self._active()
        members = self.view.state.groups.get(req.group, set())
        return auth.GetUsersResponse(usernames=sorted(members))


# The auth.API requests that only read (``qry.auth.*``); the others are
# commands (GetAuthToken and GetOneTimePassword issue tokens).
READS = frozenset(
    {"GetConfiguration", "GetAdmins", "Authorize", "GetScope", "GetACL", "GetGroups", "GetUsers"}
)
