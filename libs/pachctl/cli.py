"""The pachctl argument parser and dispatcher (argparse: standard library,
no extra dependency; each command group registers its own subparsers)."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from libs.errors import PachError
from libs.pachctl.commands import GROUPS

PROG = "pachctl"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Access the Pachyderm API.",
        epilog="Environment variables:\n  PACHD_ADDRESS=<host>:<port>, the pachd server to "
        "connect to (default localhost:30650).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for group in GROUPS:
        group.register(sub)
    return parser


def run(argv: list[str], out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "run", None) is None:
        parser.print_help(out)
        return 2
    try:
        code: int = args.run(args, out)
    except PachError as exc:
        err.write(f"{PROG}: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    return code
