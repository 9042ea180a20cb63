"""Rules for the names users give things in PFS."""

from __future__ import annotations

import re

from libs.bounds import MAX_BRANCH_NAME, MAX_REPO_NAME, check_name
from libs.errors import InvalidArgument, shown

_REPO_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def validate_repo_name(name: str) -> str:
    """A repo name: letters, digits, ``_`` and ``-`` only, at most 63 bytes."""
    check_name("repo name", name, MAX_REPO_NAME)
    if not _REPO_NAME.match(name):
        raise InvalidArgument(
            f"repo name {shown(name)} is invalid: only alphanumeric characters, "
            "underscores and dashes are allowed",
            repo=name,
        )
    return name


_BRANCH_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_COMMIT_ID = re.compile(r"^[0-9a-f]{32}$")


def is_commit_id(text: str) -> bool:
    """A commit id: 32 lowercase hex characters (a uuid4 without dashes)."""
    return bool(_COMMIT_ID.match(text))


def validate_branch_name(name: str) -> str:
    """A branch name: letters, digits, ``_`` and ``-``, at most 255 bytes,
    and not a commit id."""
    check_name("branch name", name, MAX_BRANCH_NAME)
    if not _BRANCH_NAME.match(name):
        raise InvalidArgument(
            f"branch name {shown(name)} is invalid: only alphanumeric characters, "
            "underscores and dashes are allowed",
            branch=name,
        )
    if is_commit_id(name):
        raise InvalidArgument(
            f"branch name {name!r} is invalid: it looks like a commit id", branch=name
        )
    return name
