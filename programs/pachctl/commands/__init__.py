"""Command groups: one module per group, each with ``register(subparsers)``.

A group's module (and the gRPC stubs, protobuf and libraries it needs) is
imported only when one of its commands runs: ``COMMANDS`` names, without
importing anything, the group each top-level command belongs to, so
``pachctl version --client-only`` loads no gRPC at all (docs/decisions/
0032-pachctl-lazy-start.md). A new group adds its module to ``GROUPS`` and
its commands to ``COMMANDS`` (a unit test checks the two agree)."""

from __future__ import annotations

import importlib
from types import ModuleType

# In the order ``pachctl -h`` lists them.
GROUPS = (
    "version",
    "repo",
    "commit",
    "branch",
    "file",
    "getfile",
    "job",
    "pipeline",
    "secret",
    "admin",
    "gc",
    "auth",
    "enterprise",
    "deploy",
)

_BY_GROUP = {
    "version": ("version",),
    "repo": ("create-repo", "update-repo", "inspect-repo", "list-repo", "delete-repo"),
    "commit": (
        "start-commit",
        "finish-commit",
        "inspect-commit",
        "list-commit",
        "flush-commit",
        "subscribe-commit",
        "delete-commit",
    ),
    "branch": ("create-branch", "list-branch", "inspect-branch", "set-branch", "delete-branch"),
    "file": (
        "put-file",
        "put-header",
        "put-footer",
        "copy-file",
        "inspect-file",
        "list-file",
        "glob-file",
        "diff-file",
        "delete-file",
    ),
    "getfile": ("get-file",),
    "job": (
        "inspect-job",
        "list-job",
        "flush-job",
        "delete-job",
        "stop-job",
        "restart-datum",
        "list-datum",
        "inspect-datum",
        "get-logs",
    ),
    "pipeline": (
        "create-pipeline",
        "update-pipeline",
        "inspect-pipeline",
        "extract-pipeline",
        "edit-pipeline",
        "list-pipeline",
        "delete-pipeline",
        "start-pipeline",
        "stop-pipeline",
    ),
    "secret": ("create-secret", "delete-secret", "inspect-secret", "list-secret"),
    "admin": ("extract", "restore", "inspect-cluster", "delete-all"),
    "gc": ("garbage-collect",),
    "auth": ("auth",),
    "enterprise": ("enterprise",),
    "deploy": ("deploy", "undeploy", "port-forward"),
}

# top-level command -> the group (module under programs.pachctl.commands) that registers it
COMMANDS: dict[str, str] = {c: group for group, cmds in _BY_GROUP.items() for c in cmds}


def load(group: str) -> ModuleType:
    """The module of ``group`` (one of ``GROUPS``), imported now."""
    return importlib.import_module(f"programs.pachctl.commands.{group}")
