"""How long the gateway waits for a backend: queries and ordinary commands
no longer than the bus default, and never past the caller's deadline;
building a commit's tree as long as the caller allows."""

from __future__ import annotations

from services.gateway.principal import LONG_TIMEOUT_S, timeout_for


def test_without_a_deadline_calls_use_the_default_and_finish_waits_long() -> None:
    assert timeout_for("InspectCommit", 10.0) == 10.0
    assert timeout_for("PutFileRefs", 10.0) == 10.0
    assert timeout_for("FinishCommit", 10.0) == LONG_TIMEOUT_S
    assert timeout_for("BuildCommit", 10.0) == LONG_TIMEOUT_S
    # Creating or deleting pipelines makes and removes repos: as long, too.
    assert timeout_for("CreatePipeline", 10.0) == LONG_TIMEOUT_S
    assert timeout_for("DeletePipeline", 10.0, 120.0) == 120.0


def test_the_callers_deadline_bounds_every_call() -> None:
    assert timeout_for("FinishCommit", 10.0, 600.0) == 600.0
    assert timeout_for("InspectCommit", 10.0, 3.0) == 3.0
    assert timeout_for("InspectCommit", 10.0, 86_400.0) == 10.0  # a dead backend fails soon
    assert timeout_for("FinishCommit", 10.0, -1.0) == 0.001  # already past: fail at once
