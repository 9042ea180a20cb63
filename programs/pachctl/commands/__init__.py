"""Command groups: one module per group, each with ``register(subparsers)``.

A later group (repo, file, pipeline …) adds a module here and a line in
``GROUPS``."""

from __future__ import annotations

from programs.pachctl.commands import (
    admin,
    auth,
    branch,
    commit,
    deploy,
    enterprise,
    file,
    job,
    pipeline,
    repo,
    secret,
    version,
)
from programs.pachctl.commands import gc as garbage_collect

GROUPS = (
    version,
    repo,
    commit,
    branch,
    file,
    job,
    pipeline,
    secret,
    admin,
    garbage_collect,
    auth,
    enterprise,
    deploy,
)
