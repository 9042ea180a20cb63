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

import importlib
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

# What grpc imports for its asyncio API only.
GRPC_ASYNCIO = ("asyncio", "grpc.aio", "inspect", "socket")
# protobuf's pure-Python message implementation.
PROTOBUF_PURE_PYTHON = "google.protobuf.internal.python_message"


class _StandIn(ModuleType):
    """Takes the place of module ``__name__`` until an attribute is read."""

    def __getattr__(self, attr: str) -> object:
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), attr)


class _GrpcLoader(importlib.machinery.SourceFileLoader):
    """grpc's own loader, with the stand-ins in place while grpc runs."""

    def exec_module(self, module: ModuleType) -> None:
        stand_ins = {name: _StandIn(name) for name in GRPC_ASYNCIO if name not in sys.modules}
        sys.modules.update(stand_ins)
        try:
            super().exec_module(module)
        finally:
            for name, stand_in in stand_ins.items():
                if sys.modules.get(name) is stand_in:
                    del sys.modules[name]


class _GrpcFinder:
    """A meta-path finder for ``grpc`` alone, used once."""

    @classmethod
    def find_spec(
        cls, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "grpc":
            return None
        if cls in sys.meta_path:
            sys.meta_path.remove(cls)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return None  # not the grpc we know: the ordinary finders load it
        spec.loader = _GrpcLoader(spec.loader.name, spec.loader.path)
        return spec


def install() -> None:
    """Load grpc and protobuf, when they are first imported, without the
    parts above (what is loaded already stays as it is)."""
    if PROTOBUF_PURE_PYTHON not in sys.modules:
        sys.modules[PROTOBUF_PURE_PYTHON] = _StandIn(PROTOBUF_PURE_PYTHON)
    if "grpc" not in sys.modules and _GrpcFinder not in sys.meta_path:
        sys.meta_path.insert(0, _GrpcFinder)
