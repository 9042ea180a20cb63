"""Secret commands (not in 1.7's pachctl; Pachyderm 2.x's names):
create-secret -f <Kubernetes Secret manifest>, delete-secret <name>,
inspect-secret <name>, list-secret. Values are never printed."""

from __future__ import annotations

import argparse
from typing import TextIO

from google.protobuf.empty_pb2 import Empty

from libs.api.pps import pps_pb2 as pps
from libs.api.pps import pps_pb2_grpc
from programs.pachctl import pretty
from programs.pachctl.address import from_env
from programs.pachctl.client import Pachd
from programs.pachctl.commands.pipeline import read_manifest
from programs.pachctl.tabwriter import StreamingTable

SECRET_HEADER = "NAME\tTYPE\tCREATED\t\n"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("create-secret", help="Create a secret on the cluster.")
    p.add_argument(
        "-f", "--file", default="-",
        help="File containing a Kubernetes Secret manifest (JSON or YAML); - reads stdin.",
    )  # fmt: skip
    p.set_defaults(run=create_secret)

    p = sub.add_parser("delete-secret", help="Delete a secret from the cluster.")
    p.add_argument("secret")
    p.set_defaults(run=delete_secret)

    p = sub.add_parser("inspect-secret", help="Inspect a secret (never its values).")
    p.add_argument("secret")
    p.add_argument("--raw", action="store_true", help="disable pretty printing, print raw json")
    p.set_defaults(run=inspect_secret)

    p = sub.add_parser("list-secret", help="List all secrets (never their values).")
    p.add_argument("--raw", action="store_true", help="disable pretty printing, print raw json")
    p.set_defaults(run=list_secret)


def _api(pachd: Pachd) -> pps_pb2_grpc.APIStub:
    return pps_pb2_grpc.APIStub(pachd.channel)


def create_secret(args: argparse.Namespace, out: TextIO) -> int:
    data, _ = read_manifest(args.file)
    with Pachd(from_env()) as pachd:
        pachd.call(_api(pachd).CreateSecret, pps.CreateSecretRequest(file=data))
    return 0


def delete_secret(args: argparse.Namespace, out: TextIO) -> int:
    req = pps.DeleteSecretRequest(secret=pps.Secret(name=args.secret))
    with Pachd(from_env()) as pachd:
        pachd.call(_api(pachd).DeleteSecret, req)
    return 0


def _row(info: pps.SecretInfo) -> str:
    return f"{info.secret.name}\t{info.type}\t{pretty.ago(info.creation_timestamp)}\t\n"


def inspect_secret(args: argparse.Namespace, out: TextIO) -> int:
    req = pps.InspectSecretRequest(secret=pps.Secret(name=args.secret))
    with Pachd(from_env()) as pachd:
        info = pachd.call(_api(pachd).InspectSecret, req)
    if args.raw:
        out.write(pretty.raw(info))
    else:
        out.write(
            f"Name: {info.secret.name}\nType: {info.type}\n"
            f"Created: {pretty.ago(info.creation_timestamp)}\n"
        )
    return 0


def list_secret(args: argparse.Namespace, out: TextIO) -> int:
    with Pachd(from_env()) as pachd:
        infos = list(pachd.call(_api(pachd).ListSecret, Empty()).secret_info)
    if args.raw:
        out.write(pretty.raw_all(list(infos)))
        return 0
    table = StreamingTable(out.write, SECRET_HEADER)
    for info in infos:
        table.row(_row(info))
    table.flush()
    return 0
