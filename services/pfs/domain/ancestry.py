"""Ancestry references: ``master^``, ``master~2``, ``master^^``, ``<id>^3``.

Each ``^`` or ``~`` steps back to the parent; a number after either steps back
that many generations (Pachyderm counts ``^2`` like ``~2``)."""

from __future__ import annotations

import re
from collections.abc import Callable

from libs.errors import InvalidArgument, NotFound

_STEP = re.compile(r"([\^~])(\d*)")


def parse(ref: str) -> tuple[str, int]:
    """Split a reference into its base (a branch or commit id) and how many
    generations to go back."""
    cut = min((i for i in (ref.find("^"), ref.find("~")) if i >= 0), default=len(ref))
    base, rest = ref[:cut], ref[cut:]
    if not base:
        raise InvalidArgument(f"invalid commit reference {ref!r}: no branch or commit", ref=ref)
    back = 0
    pos = 0
    for m in _STEP.finditer(rest):
        if m.start() != pos:
            break
        back += int(m.group(2)) if m.group(2) else 1
        pos = m.end()
    if pos != len(rest):
        raise InvalidArgument(f"invalid commit reference {ref!r}", ref=ref)
    return base, back


def walk(repo: str, ref: str, start: str, back: int, parent_of: Callable[[str], str]) -> str:
    """Go ``back`` generations up from commit ``start``."""
    current = start
    for step in range(back):
        parent = parent_of(current)
        if not parent:
            raise past_root(repo, ref, current, step, back)
        current = parent
    return current


def past_root(repo: str, ref: str, root: str, step: int, back: int) -> NotFound:
    """The error for a reference that goes back past the first commit."""
    return NotFound(
        f"commit {repo}/{ref} not found: {root} has no parent ({step} of {back} generations back)",
        repo=repo,
        ref=ref,
    )
