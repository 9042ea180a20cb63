"""The pachctl argument parser and dispatcher (argparse: standard library,
no extra dependency; each command group registers its own subparsers).

Every failure, a bad command line included, is one line on stderr and exit
status 1."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn, TextIO

from libs.errors import InvalidArgument, PachError
from programs.pachctl.commands import COMMANDS, GROUPS, load

PROG = "pachctl"


class UsageError(InvalidArgument):
    """A command line argparse cannot make sense of."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is raised (and printed as one line by
    ``run``) instead of printing the usage and exiting with status 2."""

    _intermixed = False

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """A command's flags may come before, between or after its positional
        arguments, as with 1.7's cobra (``put-file repo branch -f file path``):
        each command's own parser reads its arguments intermixed."""
        if self._intermixed or self._subparsers is not None:
            return super().parse_known_args(args, namespace)
        self._intermixed = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixed = False

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix(PROG).strip()
        prefix = f"{command}: " if command else ""
        raise UsageError(f"{prefix}{message} (see '{self.prog} -h')")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for ``argv``: every command's, or, when ``argv`` starts with
    a known command, only its group's (imported now; the others never are)."""
    parser = Parser(
        prog=PROG,
        description="Access the Pachyderm API.",
        epilog="Environment variables:\n  PACHD_ADDRESS=<host>:<port>, the pachd server to "
        "connect to (default localhost:30650).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    groups: tuple[str, ...] = GROUPS
    if argv and argv[0] in COMMANDS:
        groups = (COMMANDS[argv[0]],)
    for group in groups:
        load(group).register(sub)
    return parser


def _oserror(exc: OSError) -> str:
    if exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)


def run(argv: list[str], out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        err.write(f"{PROG}: {exc}\n")
        return 1
    if getattr(args, "run", None) is None:
        parser.print_help(out)
        return 2
    try:
        code: int = args.run(args, out)
    except PachError as exc:
        err.write(f"{PROG}: {exc}\n")
        return 1
    except BrokenPipeError:
        return 1  # the reader went away (``pachctl list-file … | head``)
    except OSError as exc:
        err.write(f"{PROG}: {_oserror(exc)}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    return code
