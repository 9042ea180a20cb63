"""Who may call what on auth while it is active (the bus guard's rules).
Handlers refine the rules that depend on the caller (a non-admin may get a
token or a one-time password for itself only)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from libs.authz.state import ANYONE, OWNER, PUBLIC, READER, Need, admin, on_repos

RULES: dict[str, Callable[[Any], Need]] = {
    # Activate refuses by itself once auth is active; Authenticate is how
    # a caller logs in.
    "Activate": lambda _: PUBLIC,
    "Authenticate": lambda _: PUBLIC,
    "Deactivate": lambda _: admin("auth deactivate"),
    "GetConfiguration": lambda _: admin("auth get-config"),
    "SetConfiguration": lambda _: admin("auth set-config"),
    "GetAdmins": lambda _: ANYONE,
    "ModifyAdmins": lambda _: admin("auth modify-admins"),
    "Authorize": lambda _: ANYONE,
    "WhoAmI": lambda _: ANYONE,
    "GetScope": lambda _: ANYONE,
    "SetScope": lambda r: on_repos(OWNER, r.repo),
    "GetACL": lambda r: on_repos(READER, r.repo),
    "SetACL": lambda r: on_repos(OWNER, r.repo),
    "GetAuthToken": lambda _: ANYONE,
    "ExtendAuthToken": lambda _: admin("auth extend-auth-token"),
    "RevokeAuthToken": lambda _: ANYONE,
    "SetGroupsForUser": lambda _: admin("auth set-groups"),
    "ModifyMembers": lambda _: admin("auth modify-members"),
    "GetGroups": lambda _: ANYONE,
    "GetUsers": lambda _: admin("auth get-users"),
    "GetOneTimePassword": lambda _: ANYONE,
    # Answered by the gateway (it starts the OIDC login of a caller who has
    # no token yet). IssueIdentityToken has no rule on purpose: only the
    # gateway's own request may ask for it.
    "GetOIDCLogin": lambda _: PUBLIC,
}
