"""Content-addressed Merkle file trees: the file system of a commit.

``build`` folds a commit's writes into its parent's tree; ``get``,
``list_dir``, ``walk``, ``glob`` and ``diff`` read trees, streaming. Layout
and costs: docs/decisions/0006-file-trees.md.
"""

from __future__ import annotations

from libs.trees.build import build
from libs.trees.codec import EMPTY_DIR_HASH as EMPTY_ROOT
from libs.trees.codec import tree_key
from libs.trees.diff import diff
from libs.trees.glob import glob
from libs.trees.model import (
    Copy,
    DataRef,
    Delete,
    Kind,
    Node,
    Op,
    Put,
    SetFooter,
    SetHeader,
    TreeRoot,
)
from libs.trees.paths import normalize
from libs.trees.read import effective_refs, file_refs, get, header_footer, list_dir, walk

__all__ = [
    "EMPTY_ROOT",
    "Copy",
    "DataRef",
    "Delete",
    "Kind",
    "Node",
    "Op",
    "Put",
    "SetFooter",
    "SetHeader",
    "TreeRoot",
    "build",
    "diff",
    "effective_refs",
    "file_refs",
    "get",
    "glob",
    "header_footer",
    "list_dir",
    "normalize",
    "tree_key",
    "walk",
]
