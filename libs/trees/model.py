"""The public values of the tree API: data refs, nodes, roots and write ops."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

from libs.api.internal import tree_pb2


@dataclass(frozen=True, slots=True)
class DataRef:
    """Bytes ``[offset, offset+length)`` of chunk ``chunk`` (a BLAKE3 hex digest)."""

    chunk: str
    offset: int
    length: int


class Kind(Enum):
    FILE = "file"
    DIR = "dir"


@dataclass(frozen=True, slots=True)
class Node:
    """A file or directory as its parent lists it.

    ``refs`` is a file's content when it is inlined in its parent; ``None`` for
    directories and for large files (``read.file_refs`` loads those)."""

    name: str
    kind: Kind
    hash: str
    size: int
    files: int
    refs: tuple[DataRef, ...] | None = None

    @property
    def is_dir(self) -> bool:
        return self.kind is Kind.DIR


@dataclass(frozen=True, slots=True)
class TreeRoot:
    """A built tree: the hash of its root directory, total bytes and file count."""

    hash: str
    size: int
    files: int


@dataclass(frozen=True, slots=True)
class Put:
    """Write ``refs`` as the file at ``path``; ``append`` adds them to its end."""

    path: str
    refs: Sequence[DataRef] = ()
    append: bool = False


@dataclass(frozen=True, slots=True)
class Delete:
    """Remove the file or whole directory at ``path`` (``/`` empties the tree)."""

    path: str


@dataclass(frozen=True, slots=True)
class SetHeader:
    """Set the header every file directly in directory ``path`` starts with."""

    path: str
    refs: Sequence[DataRef] = ()


@dataclass(frozen=True, slots=True)
class SetFooter:
    """Set the footer every file directly in directory ``path`` ends with."""

    path: str
    refs: Sequence[DataRef] = ()


@dataclass(frozen=True, slots=True)
class Copy:
    """Make ``dst_path`` the node at ``src_path`` of tree ``src_root`` (by reference)."""

    src_root: str
    src_path: str
    dst_path: str


Op = Put | Delete | SetHeader | SetFooter | Copy


def refs_to_pb(refs: Iterable[DataRef]) -> list[tree_pb2.DataRef]:
    return [tree_pb2.DataRef(chunk=r.chunk, offset=r.offset, length=r.length) for r in refs]


def refs_from_pb(refs: Iterable[tree_pb2.DataRef]) -> tuple[DataRef, ...]:
    return tuple(DataRef(r.chunk, r.offset, r.length) for r in refs)


def node_from_child(child: tree_pb2.Child) -> Node:
    if child.kind == tree_pb2.DIR:
        return Node(child.name, Kind.DIR, child.hash, child.size, child.files)
    refs = None if child.stored else refs_from_pb(child.refs)
    return Node(child.name, Kind.FILE, child.hash, child.size, child.files, refs)
