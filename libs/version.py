"""Our version: the Pachyderm API version we implement, plus a build tag.

We implement the Pachyderm 1.7 API, so clients that check the server's
version (``pachctl version``, the Go client) see 1.7.0. ``additional`` is a
short build tag (the ``PACH_BUILD_TAG`` variable, set by the image build;
empty by default) that ``pretty()`` appends as ``-tag``, like Pachyderm's
``PrettyPrintVersion``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import NamedTuple

MAJOR = 1
MINOR = 7
MICRO = 0


class Version(NamedTuple):
    """Immutable, compared by value (a NamedTuple, not a dataclass: pachctl
    imports this on every start and ``dataclasses`` costs ~15 ms to load)."""

    major: int = MAJOR
    minor: int = MINOR
    micro: int = MICRO
    additional: str = ""

    def pretty(self) -> str:
        base = f"{self.major}.{self.minor}.{self.micro}"
        return f"{base}-{self.additional}" if self.additional else base


def current(env: Mapping[str, str] | None = None) -> Version:
    e: Mapping[str, str] = os.environ if env is None else env
    return Version(additional=e.get("PACH_BUILD_TAG", ""))


def pretty(version: Version | None = None) -> str:
    """``1.7.0`` or ``1.7.0-<tag>``."""
    return (version or current()).pretty()
