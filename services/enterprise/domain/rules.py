"""Who may call what on enterprise while auth is active (the bus guard's
rules): activation is admin-only; anyone may read the state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from libs.authz.state import PUBLIC, Need, admin

RULES: dict[str, Callable[[Any], Need]] = {
    "Activate": lambda _: admin("enterprise activate"),
    "Deactivate": lambda _: admin("enterprise deactivate"),
    "GetState": lambda _: PUBLIC,
}
