"""``pachctl auth ...``: activate, deactivate, login (through the cluster's
OIDC identity provider, or with a one-time password), logout, whoami,
get-auth-token, use-auth-token, revoke, get-otp, list-admins,
modify-admins, set, get. The session token lives in pachctl's config file
(``programs/pachctl/config.py``)."""

from __future__ import annotations

import argparse
import sys
from functools import partial
from typing import TextIO

from libs.api.auth import auth_pb2 as auth
from libs.api.auth import auth_pb2_grpc
from libs.errors import InvalidArgument
from programs.pachctl.address import from_env
from programs.pachctl.client import Pachd
from programs.pachctl.config import set_session_token
from programs.pachctl.enterprise_time import duration_seconds

SCOPES = {"none": auth.NONE, "reader": auth.READER, "writer": auth.WRITER, "owner": auth.OWNER}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser(
        "auth", help="Auth commands manage access to data in a Pachyderm cluster"
    )
    cmds = group.add_subparsers(dest="auth_command", metavar="<command>")

    p = cmds.add_parser("activate", help="Activate Pachyderm's auth system.")
    p.add_argument("--initial-admin", required=True, help="the first admin (robot:<name>)")
    p.set_defaults(run=activate)

    p = cmds.add_parser("deactivate", help="Delete all ACLs, tokens and admins; open access.")
    p.set_defaults(run=deactivate)

    p = cmds.add_parser("login", help="Log in to Pachyderm.")
    p.add_argument(
        "-o",
        "--one-time-password",
        action="store_true",
        help="log in with a one-time password (read from stdin)",
    )
    p.set_defaults(run=login)

    p = cmds.add_parser("logout", help="Log out of Pachyderm (forget the session token).")
    p.set_defaults(run=logout)

    p = cmds.add_parser("whoami", help="Print your Pachyderm identity.")
    p.set_defaults(run=whoami)

    p = cmds.add_parser("get-auth-token", help="Get an auth token for a subject (admins).")
    p.add_argument("subject", nargs="?", default="")
    p.add_argument("--ttl", default="", help="how long the token lives (e.g. 30d, 12h)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the token")
    p.set_defaults(run=get_auth_token)

    p = cmds.add_parser("use-auth-token", help="Log in with a token read from stdin.")
    p.set_defaults(run=use_auth_token)

    p = cmds.add_parser("revoke", help="Revoke a token (read from stdin).")
    p.set_defaults(run=revoke)

    p = cmds.add_parser("get-otp", help="Get a one-time password to log in with.")
    p.add_argument("subject", nargs="?", default="")
    p.set_defaults(run=get_otp)

    p = cmds.add_parser("list-admins", help="List the cluster's admins.")
    p.set_defaults(run=list_admins)

    p = cmds.add_parser("modify-admins", help="Add or remove cluster admins.")
    p.add_argument("--add", action="append", default=[], help="subjects to make admins")
    p.add_argument("--remove", action="append", default=[], help="admins to remove")
    p.set_defaults(run=modify_admins)

    p = cmds.add_parser("set", help="Set the scope of access a subject has on a repo.")
    p.add_argument("subject")
    p.add_argument("scope", choices=sorted(SCOPES), metavar="none|reader|writer|owner")
    p.add_argument("repo")
    p.set_defaults(run=set_scope)

    p = cmds.add_parser("get", help="Get a subject's scope on a repo, or the repo's ACL.")
    p.add_argument("args", nargs="+", metavar="[subject] repo")
    p.set_defaults(run=get)


def _api(pachd: Pachd) -> auth_pb2_grpc.APIStub:
    return auth_pb2_grpc.APIStub(pachd.channel)


def _split(values: list[str]) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def _stdin_line(prompt: str) -> str:
    if sys.stdin.isatty():
        sys.stderr.write(prompt)
        sys.stderr.flush()
    line = sys.stdin.readline().strip()
    if not line:
        raise InvalidArgument(f"{prompt.strip().rstrip(':')}: nothing was read from stdin")
    return line


def activate(args: argparse.Namespace, out: TextIO) -> int:
    req = auth.ActivateRequest(subject=args.initial_admin)
    with Pachd(from_env(), timeout=30.0, anonymous=True) as pachd:
        reply = pachd.call(_api(pachd).Activate, req)
    set_session_token(reply.pach_token)
    return 0


def deactivate(args: argparse.Namespace, out: TextIO) -> int:
    with Pachd(from_env(), timeout=30.0) as pachd:
        pachd.call(_api(pachd).Deactivate, auth.DeactivateRequest())
    return 0


def login(args: argparse.Namespace, out: TextIO) -> int:
    if not args.one_time_password:
        return _oidc_login(out)
    otp = _stdin_line("One-time password: ")
    with Pachd(from_env(), anonymous=True) as pachd:
        reply = pachd.call(
            _api(pachd).Authenticate, auth.AuthenticateRequest(one_time_password=otp)
        )
    set_session_token(reply.pach_token)
    return 0


def _oidc_login(out: TextIO) -> int:
    """1.7's browser login, through the cluster's OIDC provider: print the
    provider's URL, read back the Pachyderm token the gateway's callback
    page showed, check it and keep it."""
    with Pachd(from_env(), anonymous=True) as pachd:
        start = pachd.call(_api(pachd).GetOIDCLogin, auth.GetOIDCLoginRequest())
    out.write(
        "(1) Please paste this link into a browser:\n\n"
        f"{start.login_url}\n\n"
        "(You will log in with this cluster's identity provider; the page it sends you "
        "back to shows a Pachyderm token.)\n\n"
        "(2) Please paste the Pachyderm token here:\n"
    )
    out.flush()
    token = _stdin_line("Pachyderm token: ")
    with Pachd(from_env(), anonymous=True) as pachd:
        who = _api(pachd).WhoAmI
        pachd.call(partial(who, metadata=(("authn-token", token),)), auth.WhoAmIRequest())
    set_session_token(token)
    return 0


def logout(args: argparse.Namespace, out: TextIO) -> int:
    set_session_token("")
    return 0


def whoami(args: argparse.Namespace, out: TextIO) -> int:
    with Pachd(from_env()) as pachd:
        reply = pachd.call(_api(pachd).WhoAmI, auth.WhoAmIRequest())
    out.write(f'You are "{reply.username}"\n')
    if reply.ttl > 0:
        out.write(f"session expires in {reply.ttl} seconds\n")
    if reply.is_admin:
        out.write("You are an administrator of this Pachyderm cluster\n")
    return 0


def get_auth_token(args: argparse.Namespace, out: TextIO) -> int:
    req = auth.GetAuthTokenRequest(subject=args.subject)
    if args.ttl:
        req.ttl = duration_seconds(args.ttl, "--ttl")
    with Pachd(from_env()) as pachd:
        reply = pachd.call(_api(pachd).GetAuthToken, req)
    if args.quiet:
        out.write(reply.token + "\n")
    else:
        out.write(f"New credentials:\n  Subject: {reply.subject}\n  Token: {reply.token}\n")
    return 0


def use_auth_token(args: argparse.Namespace, out: TextIO) -> int:
    set_session_token(_stdin_line("Please paste your Pachyderm auth token: "))
    return 0


def revoke(args: argparse.Namespace, out: TextIO) -> int:
    token = _stdin_line("Token to revoke: ")
    with Pachd(from_env()) as pachd:
        pachd.call(_api(pachd).RevokeAuthToken, auth.RevokeAuthTokenRequest(token=token))
    return 0


def get_otp(args: argparse.Namespace, out: TextIO) -> int:
    with Pachd(from_env()) as pachd:
        reply = pachd.call(
            _api(pachd).GetOneTimePassword, auth.GetOneTimePasswordRequest(subject=args.subject)
        )
    out.write(reply.code + "\n")
    return 0


def list_admins(args: argparse.Namespace, out: TextIO) -> int:
    with Pachd(from_env()) as pachd:
        reply = pachd.call(_api(pachd).GetAdmins, auth.GetAdminsRequest())
    out.write("".join(f"{a}\n" for a in reply.admins))
    return 0


def modify_admins(args: argparse.Namespace, out: TextIO) -> int:
    req = auth.ModifyAdminsRequest(add=_split(args.add), remove=_split(args.remove))
    if not req.add and not req.remove:
        raise InvalidArgument("modify-admins needs --add or --remove")
    with Pachd(from_env()) as pachd:
        pachd.call(_api(pachd).ModifyAdmins, req)
    return 0


def set_scope(args: argparse.Namespace, out: TextIO) -> int:
    req = auth.SetScopeRequest(username=args.subject, repo=args.repo, scope=SCOPES[args.scope])
    with Pachd(from_env()) as pachd:
        pachd.call(_api(pachd).SetScope, req)
    return 0


def get(args: argparse.Namespace, out: TextIO) -> int:
    if len(args.args) > 2:
        raise InvalidArgument("auth get takes [subject] repo")
    with Pachd(from_env()) as pachd:
        api = _api(pachd)
        if len(args.args) == 2:
            subject, repo = args.args
            reply = pachd.call(api.GetScope, auth.GetScopeRequest(username=subject, repos=[repo]))
            out.write(auth.Scope.Name(reply.scopes[0]) + "\n")
            return 0
        acl = pachd.call(api.GetACL, auth.GetACLRequest(repo=args.args[0]))
    for entry in sorted([*acl.entries, *acl.robot_entries], key=lambda e: e.username):
        out.write(f"{entry.username}: {auth.Scope.Name(entry.scope)}\n")
    return 0
