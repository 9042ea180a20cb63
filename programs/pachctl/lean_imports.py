"""pachctl loads grpc and protobuf without the parts it never runs.

- ``import grpc`` also runs ``grpc.aio`` (grpc's asyncio API), and grpc's
  Cython core imports ``asyncio``, ``inspect`` and ``socket``, which only
  its asyncio code uses: pachctl's calls are synchronous and run in gRPC's
  C core.
- protobuf's descriptor pool and generated-code builder import
  ``google.protobuf.internal.python_message``, protobuf's pure-Python
  message implementation (and with it text_format, the pure-Python
  containers, decoder, encoder and pickle), which the upb backend, the
  default, never uses.

With what they import (ssl, subprocess, selectors, ast, dis, ...) that was
over a third of ``pachctl list-repo``'s start (docs/decisions/
0037-pachctl-list-repo-start.md). ``install()``, called once by pachctl's
``__main__``, puts a stand-in in their place in ``sys.modules``. A stand-in
imports the real module the first time one of its attributes is read and
hands that over, so code that does use them (grpc.aio, gRPC's Cython core
through the references it keeps, protobuf's pure-Python backend) still
works.

The stand-ins for grpc's modules are in ``sys.modules`` only while grpc
itself loads (a finder wraps grpc's loader), so a later ``import asyncio``
(or socket, inspect, grpc.aio) is the ordinary one. The one for
``python_message``, a module only protobuf imports, stays until used."""

from __future__ import annotations

from libs.lean_imports import PROTOBUF_PURE_PYTHON, StandIn, defer, defer_while_loading

# What grpc imports for its asyncio API only.
GRPC_ASYNCIO = ("asyncio", "grpc.aio", "inspect", "socket")

__all__ = ["GRPC_ASYNCIO", "PROTOBUF_PURE_PYTHON", "StandIn", "install"]


def install() -> None:
    """Load grpc and protobuf, when they are first imported, without the
    parts above (what is loaded already stays as it is)."""
    defer(PROTOBUF_PURE_PYTHON)
    defer_while_loading("grpc", GRPC_ASYNCIO)
