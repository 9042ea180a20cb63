"""Modules a library imports that this process may never use, loaded on
first use instead of at start.

A ``StandIn`` takes a module's place in ``sys.modules``; the first time one
of its attributes is read it imports the real module and hands that
attribute over, so code that does use the module still works.

- ``defer_while_loading(importer, names)``: while module ``importer`` runs
  its own import, each of ``names`` not loaded yet is a stand-in; after, a
  later ``import name`` elsewhere is the ordinary one. ``importer`` keeps
  its reference to the stand-in, which loads the real module when used.
- ``defer(name)``: ``name`` is a stand-in until used, for a module only a
  library imports.

``for_services()`` is what every service and worker process installs
before its imports (``libs.service``): nats-py imports aiohttp for its
websocket transport (with yarl, multidict, attrs and aiohappyeyeballs,
about a third of a backend's start), which a cluster on ``nats://`` never
runs, and protobuf's pure-Python message implementation, which the default
backend never uses (docs/decisions/0037-pachctl-list-repo-start.md).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

# nats-py's websocket transport, and what it imports for it alone.
NATS_TRANSPORT = "nats.aio.transport"
NATS_WEBSOCKET = ("aiohttp",)
# protobuf's pure-Python message implementation.
PROTOBUF_PURE_PYTHON = "google.protobuf.internal.python_message"


class StandIn(ModuleType):
    """Takes the place of module ``__name__`` until an attribute is read."""

    def __getattr__(self, attr: str) -> object:
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), attr)


class _DeferringLoader(importlib.machinery.SourceFileLoader):
    """A module's own loader, with stand-ins for ``names`` while it runs."""

    def __init__(self, fullname: str, path: str, names: Sequence[str]) -> None:
        super().__init__(fullname, path)
        self.names = tuple(names)

    def exec_module(self, module: ModuleType) -> None:
        stand_ins = {name: StandIn(name) for name in self.names if name not in sys.modules}
        sys.modules.update(stand_ins)
        try:
            super().exec_module(module)
        finally:
            for name, stand_in in stand_ins.items():
                if sys.modules.get(name) is stand_in:
                    del sys.modules[name]


class _DeferringFinder:
    """A meta-path finder for module ``importer`` alone, used once."""

    def __init__(self, importer: str, names: Sequence[str]) -> None:
        self.importer = importer
        self.names = tuple(names)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.importer:
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return None  # not the module we know: the ordinary finders load it
        spec.loader = _DeferringLoader(spec.loader.name, spec.loader.path, self.names)
        return spec


def defer_while_loading(importer: str, names: Sequence[str]) -> None:
    """When ``importer`` is first imported, ``names`` are stand-ins while it
    runs (nothing changes if it is loaded already)."""
    if importer in sys.modules:
        return
    if any(isinstance(f, _DeferringFinder) and f.importer == importer for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _DeferringFinder(importer, names))


def defer(name: str) -> None:
    """``name`` is a stand-in until one of its attributes is read."""
    if name not in sys.modules:
        sys.modules[name] = StandIn(name)


def for_services() -> None:
    """What a service or worker process installs before its imports."""
    defer(PROTOBUF_PURE_PYTHON)
    defer_while_loading(NATS_TRANSPORT, NATS_WEBSOCKET)
