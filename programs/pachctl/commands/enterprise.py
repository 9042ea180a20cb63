"""``pachctl enterprise activate <code> [--expires T]``, ``enterprise
get-state``, and the hidden ``enterprise mint-code --signing-key KEY.pem``
(operators and tests: prints a code signed with an Ed25519 private key)."""

from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path
from typing import TextIO

from google.protobuf.timestamp_pb2 import Timestamp

from libs.api.enterprise import enterprise_pb2 as ent
from libs.api.enterprise import enterprise_pb2_grpc
from libs.errors import InvalidArgument
from programs.pachctl.address import from_env
from programs.pachctl.client import Pachd
from programs.pachctl.enterprise_time import duration_seconds


def parse_expiry(text: str, now: float | None = None) -> int:
    """Unix seconds from a duration (``30d``, ``12h``) or an RFC 3339 time."""
    now = time.time() if now is None else now
    if text.strip()[-1:] in "smhd" and text.strip()[:-1].isdigit():
        return int(now) + duration_seconds(text, "--expires")
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgument(
            f"bad --expires {text!r}: a duration such as 30d or 12h, or an RFC 3339 time"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp())


def _when(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser("enterprise", help="Enterprise commands enable Pachyderm Enterprise.")
    cmds = group.add_subparsers(dest="enterprise_command", metavar="<command>")

    p = cmds.add_parser("activate", help="Activate the enterprise features of Pachyderm.")
    p.add_argument("code", help="the activation code")
    p.add_argument(
        "--expires", default="", help="an earlier expiry (a duration such as 30d, or a time)"
    )
    p.set_defaults(run=activate)

    p = cmds.add_parser("get-state", help="Check whether the cluster has enterprise activated.")
    p.set_defaults(run=get_state)

    # Hidden: not listed in help (operators and tests mint codes with it).
    p = cmds.add_parser("mint-code")
    p.add_argument("--signing-key", required=True, help="Ed25519 private key (PEM)")
    p.add_argument("--expires", default="365d", help="a duration such as 30d, or a time")
    p.add_argument("--customer", default="", help="who the code is for")
    p.set_defaults(run=mint_code)
    cmds._choices_actions = [a for a in cmds._choices_actions if a.dest != "mint-code"]


def _api(pachd: Pachd) -> enterprise_pb2_grpc.APIStub:
    return enterprise_pb2_grpc.APIStub(pachd.channel)


def activate(args: argparse.Namespace, out: TextIO) -> int:
    req = ent.ActivateRequest(activation_code=args.code)
    if args.expires:
        req.expires.CopyFrom(Timestamp(seconds=parse_expiry(args.expires)))
    with Pachd(from_env()) as pachd:
        reply = pachd.call(_api(pachd).Activate, req)
    out.write(
        "Activation succeeded. Your Pachyderm Enterprise token expires "
        f"{_when(reply.info.expires.seconds)}\n"
    )
    return 0


def get_state(args: argparse.Namespace, out: TextIO) -> int:
    with Pachd(from_env()) as pachd:
        reply = pachd.call(_api(pachd).GetState, ent.GetStateRequest())
    if reply.state == ent.NONE:
        out.write("No Pachyderm Enterprise token was found\n")
        return 0
    out.write(f"Pachyderm Enterprise token state: {ent.State.Name(reply.state)}\n")
    out.write(f"Expiration: {_when(reply.info.expires.seconds)}\n")
    return 0


def mint_code(args: argparse.Namespace, out: TextIO) -> int:
    # Imported here: the other pachctl commands do not pay for the crypto.
    from libs.activation_code import load_private_key, mint

    key = load_private_key(Path(args.signing_key))
    expires = parse_expiry(args.expires)
    if expires <= time.time():
        raise InvalidArgument(f"--expires {args.expires!r} is in the past")
    out.write(mint(key, expires, args.customer) + "\n")
    return 0
