"""What the auth and enterprise events say, folded into one in-memory state:
activation, admins, tokens (by hash), repo ACLs, groups and the enterprise
expiry. Pure: the view feeds it events; services ask it questions.

A repo's ACL starts when pfs records ``RepoCreated`` while auth is active:
the principal that created it is its OWNER (Pachyderm 1.7's rule). A repo
with no ACL (created before activation) is managed by admins only."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from google.protobuf.message import Message

from libs.api.events import auth_pb2 as aev
from libs.api.events import enterprise_pb2 as eev
from libs.errors import PermissionDenied, Unauthenticated

NONE, READER, WRITER, OWNER = 0, 1, 2, 3
SCOPE_NAMES = {NONE: "NONE", READER: "READER", WRITER: "WRITER", OWNER: "OWNER"}

# What the event types the view follows are called.
AUTH_TYPES = frozenset(
    {
        "auth.AuthActivated",
        "auth.AuthDeactivated",
        "auth.AdminsModified",
        "auth.ConfigurationSet",
        "auth.TokenIssued",
        "auth.TokenExtended",
        "auth.TokenRevoked",
        "auth.OneTimePasswordRedeemed",
        "auth.ScopeSet",
        "auth.AclReplaced",
        "auth.GroupMembersModified",
        "enterprise.ActivationCodeAccepted",
        "enterprise.ActivationCleared",
        "pfs.RepoCreated",
        "pfs.RepoDeleted",
        "pps.PipelineCreated",
        "pps.PipelineUpdated",
        "pps.PipelineDeleted",
    }
)
SUBJECTS = ("ev.auth.>", "ev.enterprise.>", "ev.pfs.repo.>", "ev.pps.pipeline.>")

NOT_LOGGED_IN = "not logged in: run 'pachctl auth login' or send an authn-token"


def token_hash(token: str) -> str:
    """The only form a token is ever stored in."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class TokenRecord:
    subject: str
    expires: int  # unix seconds, 0: never
    source: int
    one_time: bool
    generation: int
    revoked: bool = False
    redeemed: bool = False

    def live(self, now: float) -> bool:
        return not self.revoked and not self.redeemed and (not self.expires or self.expires > now)


@dataclass(frozen=True)
class Need:
    """What a request needs: an admin, or scopes on repos (every one of
    them), or only a logged-in caller."""

    admin: bool = False
    repos: tuple[tuple[str, int], ...] = ()
    what: str = ""  # the operation, for messages
    public: bool = False  # anyone, even not logged in, even in admin-only state
    # WRITER on these repos when they exist (a pipeline's output repo: the
    # creator of a new one becomes its OWNER).
    writer_if_exists: tuple[str, ...] = ()


ANYONE = Need()
PUBLIC = Need(public=True)


def admin(what: str) -> Need:
    return Need(admin=True, what=what)


def on_repos(scope: int, *repos: str) -> Need:
    return Need(repos=tuple((r, scope) for r in repos if r))


@dataclass
class AuthState:
    active: bool = False
    generation: int = 0
    admins: set[str] = field(default_factory=set)
    tokens: dict[str, TokenRecord] = field(default_factory=dict)
    acls: dict[str, dict[str, int]] = field(default_factory=dict)
    repos: set[str] = field(default_factory=set)
    # Who created (or last updated) each pipeline: its jobs read as them.
    pipeline_creators: dict[str, str] = field(default_factory=dict)
    groups: dict[str, set[str]] = field(default_factory=dict)
    configuration: bytes = b""
    enterprise_expires: int = 0  # 0: never activated
    enterprise_code: str = ""

    # --- events ----------------------------------------------------------

    def apply(self, event_type: str, aggregate_id: str, principal: str, event: Message) -> None:
        if event_type.startswith("enterprise."):
            self._enterprise(event)
        elif event_type.startswith("pfs."):
            self._pfs(event_type, aggregate_id, principal)
        elif event_type.startswith("pps."):
            if event_type == "pps.PipelineDeleted":
                self.pipeline_creators.pop(aggregate_id, None)
            else:
                self.pipeline_creators[aggregate_id] = principal
        else:
            self._auth(aggregate_id, event)

    def _enterprise(self, event: Message) -> None:
        if isinstance(event, eev.ActivationCodeAccepted):
            self.enterprise_expires = event.expires_unix
            self.enterprise_code = event.code_id
        elif isinstance(event, eev.ActivationCleared):
            self.enterprise_expires = 0
            self.enterprise_code = ""

    def _pfs(self, event_type: str, repo: str, principal: str) -> None:
        if event_type == "pfs.RepoDeleted":
            self.acls.pop(repo, None)
            self.repos.discard(repo)
        elif event_type == "pfs.RepoCreated":
            self.repos.add(repo)
            if self.active and principal:
                self.acls[repo] = {principal: OWNER}

    def _auth(self, aggregate_id: str, event: Message) -> None:
        if isinstance(event, aev.AuthActivated):
            self.active = True
            self.generation += 1
            self.admins = {event.admin}
        elif isinstance(event, aev.AuthDeactivated):
            self.active = False
            self.admins = set()
            self.tokens = {}
            self.acls = {}
            self.groups = {}
        elif isinstance(event, aev.AdminsModified):
            self.admins = (self.admins | set(event.add)) - set(event.remove)
        elif isinstance(event, aev.ConfigurationSet):
            self.configuration = event.configuration
        elif isinstance(event, aev.TokenIssued):
            self.tokens[aggregate_id] = TokenRecord(
                event.subject, event.expires_unix, event.source, event.one_time, event.generation
            )
        elif isinstance(event, aev.TokenExtended):
            if rec := self.tokens.get(aggregate_id):
                rec.expires = event.expires_unix
        elif isinstance(event, aev.TokenRevoked):
            if rec := self.tokens.get(aggregate_id):
                rec.revoked = True
        elif isinstance(event, aev.OneTimePasswordRedeemed):
            if rec := self.tokens.get(aggregate_id):
                rec.redeemed = True
        elif isinstance(event, aev.ScopeSet):
            acl = dict(self.acls.get(aggregate_id, {}))
            if event.scope == NONE:
                acl.pop(event.subject, None)
            else:
                acl[event.subject] = event.scope
            self.acls[aggregate_id] = acl
        elif isinstance(event, aev.AclReplaced):
            self.acls[aggregate_id] = {k: v for k, v in event.entries.items() if v != NONE}
        elif isinstance(event, aev.GroupMembersModified):
            members = (self.groups.get(aggregate_id, set()) | set(event.add)) - set(event.remove)
            self.groups[aggregate_id] = members

    # --- questions -------------------------------------------------------

    def enterprise_state(self, now: float) -> str:
        if not self.enterprise_expires:
            return "NONE"
        return "ACTIVE" if self.enterprise_expires > now else "EXPIRED"

    def admin_only(self, now: float) -> bool:
        """Auth is active but the enterprise activation expired: only admins
        may do anything (Pachyderm 1.7)."""
        return self.active and self.enterprise_state(now) == "EXPIRED"

    def token(self, token: str, now: float) -> TokenRecord | None:
        """The live token record for ``token`` (one-time passwords excluded)."""
        rec = self.tokens.get(token_hash(token))
        if rec is None or rec.one_time or rec.generation != self.generation:
            return None
        return rec if rec.live(now) else None

    def subject_for(self, token: str, now: float) -> str:
        """The subject a token stands for; Unauthenticated when it is not a
        live token of this activation."""
        if not token:
            raise Unauthenticated(NOT_LOGGED_IN)
        rec = self.token(token, now)
        if rec is None:
            raise Unauthenticated(
                "not logged in: the auth token is unknown, expired or revoked; "
                "run 'pachctl auth login'"
            )
        return rec.subject

    def groups_of(self, subject: str) -> list[str]:
        return sorted(g for g, members in self.groups.items() if subject in members)

    def scope(self, subject: str, repo: str) -> int:
        """The subject's scope on the repo (admins: OWNER everywhere)."""
        if subject in self.admins:
            return OWNER
        acl = self.acls.get(repo)
        if not acl:
            return NONE
        best = acl.get(subject, NONE)
        for group in self.groups_of(subject):
            best = max(best, acl.get(f"group/{group}", NONE))
        return best

    def pipeline_denial(self, pipeline: str, inputs: list[str], now: float) -> str:
        """Why a job of ``pipeline`` may not read its inputs ("" when it
        may): its creator must still hold READER on every input repo."""
        creator = self.pipeline_creators.get(pipeline, "")
        if not self.active or not creator:
            return ""  # created with auth off: it runs as the cluster
        for repo in inputs:
            if repo and self.scope(creator, repo) < READER:
                return (
                    f"{creator}, who created pipeline {pipeline}, is not authorized to read "
                    f"input repo {repo}: it needs READER"
                )
        if self.admin_only(now) and creator not in self.admins:
            return f"{creator} is not an admin and the enterprise activation expired"
        return ""

    def check(self, subject: str, need: Need, now: float) -> None:
        """Raise unless ``subject`` may do what ``need`` says (auth active)."""
        if need.public:
            return
        if not subject:
            raise Unauthenticated(NOT_LOGGED_IN)
        is_admin = subject in self.admins
        if is_admin:
            return
        if self.admin_only(now):
            raise PermissionDenied(
                f"{subject} is not an admin, and the enterprise activation expired: "
                "the cluster is in admin-only state",
                subject=subject,
            )
        if need.admin:
            raise PermissionDenied(
                f"{subject} is not authorized: {need.what or 'this operation'} is admin-only",
                subject=subject,
            )
        needs = list(need.repos)
        needs.extend((r, WRITER) for r in need.writer_if_exists if r in self.repos)
        for repo, scope in needs:
            if self.scope(subject, repo) < scope:
                raise PermissionDenied(
                    f"{subject} is not authorized to perform this operation; "
                    f"it needs {SCOPE_NAMES[scope]} on repo {repo}",
                    subject=subject,
                    repo=repo,
                    required=SCOPE_NAMES[scope],
                )
