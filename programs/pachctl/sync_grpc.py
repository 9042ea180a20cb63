"""pachctl's gRPC calls are synchronous: load grpc without its asyncio half.

``import grpc`` also runs ``grpc.aio`` (grpc's asyncio API), and grpc's
Cython core imports ``asyncio``, ``inspect`` and ``socket``, which only its
asyncio code uses (the synchronous calls run in gRPC's C core): with what
they import (ssl, subprocess, selectors, ast, dis...) about 40% of what
importing grpc costs, for code pachctl never runs (docs/decisions/
0037-pachctl-list-repo-start.md).

``install()``, called once by pachctl's ``__main__``, adds a finder that
loads grpc, whenever it is first imported, with stand-ins for these modules
in ``sys.modules``. A stand-in imports the real module the first time one of
its attributes is read and hands that over, so code that does use them
(grpc.aio, or the Cython core through the references it keeps) still works.
Once grpc is loaded the stand-ins leave ``sys.modules``: a later ``import
asyncio`` (or socket, inspect, grpc.aio) is the ordinary one."""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

# What grpc imports for its asyncio API only.
DEFERRED = ("asyncio", "grpc.aio", "inspect", "socket")


class _StandIn(ModuleType):
    """Takes the place of module ``__name__`` until an attribute is read."""

    def __getattr__(self, attr: str) -> object:
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), attr)


class _Loader(importlib.machinery.SourceFileLoader):
    """grpc's own loader, with the stand-ins in place while grpc runs."""

    def exec_module(self, module: ModuleType) -> None:
        stand_ins = {name: _StandIn(name) for name in DEFERRED if name not in sys.modules}
        sys.modules.update(stand_ins)
        try:
            super().exec_module(module)
        finally:
            for name, stand_in in stand_ins.items():
                if sys.modules.get(name) is stand_in:
                    del sys.modules[name]


class _Finder:
    """A meta-path finder for ``grpc`` alone, used once."""

    @classmethod
    def find_spec(
        cls, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "grpc":
            return None
        uninstall()
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return None  # not the grpc we know: the ordinary finders load it
        spec.loader = _Loader(spec.loader.name, spec.loader.path)
        return spec


def install() -> None:
    """Load grpc, when it is first imported, without asyncio (a no-op once
    grpc is loaded)."""
    if "grpc" not in sys.modules and _Finder not in sys.meta_path:
        sys.meta_path.insert(0, _Finder)


def uninstall() -> None:
    if _Finder in sys.meta_path:
        sys.meta_path.remove(_Finder)
