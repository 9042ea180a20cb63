"""Rules for the names users give things in PFS."""

from __future__ import annotations

import re

from libs.errors import InvalidArgument

_REPO_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def validate_repo_name(name: str) -> str:
    """A repo name: letters, digits, ``_`` and ``-`` only."""
    if not _REPO_NAME.match(name):
        raise InvalidArgument(
            f"repo name {name!r} is invalid: only alphanumeric characters, "
            "underscores and dashes are allowed",
            repo=name,
        )
    return name
