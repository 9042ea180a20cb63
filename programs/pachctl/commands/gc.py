"""``pachctl garbage-collect [-m/--memory SIZE] [--raw]``

Deletes the objects no commit, open commit or job references any more
(pps.API ``GarbageCollect``). Unlike 1.7 it needs no quiet cluster: what is
written while it runs is kept. ``--memory`` (1.7's flag, go-units sizes such
as ``10MB`` or ``1g``) is the memory for the set of live objects before it
moves to disk; ``0`` is the server's default. It prints what it deleted,
kept and spared (``--raw``: the result as JSON).
"""

from __future__ import annotations

import argparse
import re
from typing import TextIO

import grpc

from libs.api.internal import gc_pb2
from libs.api.pps import pps_pb2 as pps
from libs.api.pps import pps_pb2_grpc
from libs.errors import InvalidArgument
from programs.pachctl import pretty
from programs.pachctl.address import from_env
from programs.pachctl.client import LONG_TIMEOUT_S, Pachd

GC_RESULT_KEY = "pach-gc-result-bin"  # as services.gateway.grpc.pps
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "garbage-collect",
        help="Garbage collect unused data.",
        description=(
            "Garbage collect unused data: delete the stored objects that no commit, "
            "open commit or job references any more. Data written while it runs is kept."
        ),
    )
    p.add_argument(
        "-m",
        "--memory",
        default="0",
        help="The amount of memory to use during garbage collection (e.g. 10MB, 1g); "
        "0: the server's default.",
    )
    p.add_argument("--raw", action="store_true", help="print the result as JSON")
    p.set_defaults(run=run)


def ram_in_bytes(text: str) -> int:
    """go-units ``RAMInBytes``: a number with an optional k/m/g/t/p suffix
    (binary multiples, an optional ``b`` or ``ib``, any case)."""
    m = _SIZE.match(text.strip())
    if m is None:
        raise InvalidArgument(f"invalid size {text!r}: use a number with an optional unit (10MB)")
    return int(float(m.group(1)) * 1024 ** _POWERS[m.group(2).lower()])


def summary(result: gc_pb2.GarbageCollectResult) -> str:
    def part(what: str, c: gc_pb2.ObjectCount) -> str:
        noun = "object" if c.objects == 1 else "objects"
        return f"{what} {c.objects} {noun} ({pretty.size(c.bytes)})"

    lines = [
        part("Deleted", result.deleted),
        part("Kept", result.kept) + " still in use",
        part("Spared", result.protected) + _spared(result.cutoff_by),
    ]
    return "\n".join(lines) + "\n"


def _spared(cutoff_by: str) -> str:
    """Why the unreferenced objects ``protected`` counts were kept."""
    if cutoff_by in ("open commit", "unfinished job"):
        return (
            f" not referenced yet but written since the oldest {cutoff_by} began "
            "(kept: they may belong to it)"
        )
    return " written during the collection"


def garbage_collect(memory_bytes: int) -> gc_pb2.GarbageCollectResult:
    req = pps.GarbageCollectRequest(memory_bytes=memory_bytes)
    with Pachd(from_env(), timeout=LONG_TIMEOUT_S) as pachd:
        stub = pps_pb2_grpc.APIStub(pachd.channel)
        try:
            _, call = stub.GarbageCollect.with_call(req, timeout=pachd.timeout)
        except grpc.RpcError as err:
            raise pachd.translate(err) from None
        result = gc_pb2.GarbageCollectResult()
        for key, value in call.trailing_metadata() or ():
            if key == GC_RESULT_KEY and isinstance(value, bytes):
                result.ParseFromString(value)
        return result


def run(args: argparse.Namespace, out: TextIO) -> int:
    result = garbage_collect(ram_in_bytes(args.memory))
    out.write(pretty.raw(result) + "\n" if args.raw else summary(result))
    return 0
