"""Who may call what on admin while auth is active (the bus guard's rules,
``libs.authz.guard``): extract and restore (and their per-session
subjects) are admin-only; anyone logged in may inspect the cluster."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from libs.authz.state import ANYONE, Need, admin

RULES: dict[str, Callable[[Any], Need]] = {
    "Extract": lambda _: admin("extract"),
    "Restore": lambda _: admin("restore"),
    "ExtractParts_": lambda _: admin("extract"),
    "RestoreParts_": lambda _: admin("restore"),
    "InspectCluster": lambda _: ANYONE,
}
