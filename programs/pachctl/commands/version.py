"""``pachctl version [--client-only] [--raw]``"""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from libs import version
from programs.pachctl.tabwriter import format_table


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("version", help="Print Pachyderm version information.")
    p.add_argument(
        "--client-only",
        action="store_true",
        help="only print pachctl's version, without contacting pachd",
    )
    p.add_argument("--raw", action="store_true", help="print the Version messages as JSON")
    p.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for pachd (default 5)"
    )
    p.set_defaults(run=run)


def _client_version() -> dict[str, Any]:
    v = version.current()
    return {"major": v.major, "minor": v.minor, "micro": v.micro, "additional": v.additional}


def _pretty(v: dict[str, Any]) -> str:
    return version.Version(
        int(v.get("major", 0)),
        int(v.get("minor", 0)),
        int(v.get("micro", 0)),
        str(v.get("additional", "")),
    ).pretty()


def table(rows: list[tuple[str, str]]) -> str:
    text = "COMPONENT\tVERSION\t\n" + "".join(f"{c}\t{v}\t\n" for c, v in rows)
    return format_table(text)


def server_version(timeout: float) -> dict[str, Any]:
    # gRPC and protobuf are loaded only when pachd is asked (``--client-only``
    # starts in about the time of a bare ``python``)
    from google.protobuf.empty_pb2 import Empty
    from google.protobuf.json_format import MessageToDict

    from libs.api.version.versionpb import version_pb2_grpc
    from programs.pachctl.address import from_env
    from programs.pachctl.client import Pachd

    with Pachd(from_env(), timeout=timeout) as pachd:
        reply = pachd.call(version_pb2_grpc.APIStub(pachd.channel).GetVersion, Empty())
    return MessageToDict(reply, always_print_fields_with_no_presence=True)


def run(args: argparse.Namespace, out: TextIO) -> int:
    client = _client_version()
    server = None if args.client_only else server_version(args.timeout)
    if args.raw:
        import json

        out.write(json.dumps(client, indent=2) + "\n")
        if server is not None:
            out.write(json.dumps(server, indent=2) + "\n")
        return 0
    rows = [("pachctl", _pretty(client))]
    if server is not None:
        rows.append(("pachd", _pretty(server)))
    out.write(table(rows))
    return 0
