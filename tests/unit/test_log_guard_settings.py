"""The log guard's settings from the environment, and what it lets through
while the log is lost (the guard's checks run against a real cluster in
tests/integration/test_event_log_identity.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from libs.errors import EventLogLost, InvalidArgument, Unavailable
from libs.events.identity import log_missing
from libs.log_guard import MISSING, UNREACHABLE, GuardSettings, GuardState, LogGuard, disk_free


def test_settings_default_and_parse() -> None:
    assert GuardSettings.from_env({}) == GuardSettings(10.0, 512 << 20)
    got = GuardSettings.from_env({"PACH_LOG_CHECK_MS": "250", "PACH_DISK_LOW_BYTES": "0"})
    assert got == GuardSettings(0.25, 0)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PACH_LOG_CHECK_MS", "0"),
        ("PACH_LOG_CHECK_MS", "-5"),
        ("PACH_LOG_CHECK_MS", "soon"),
        ("PACH_DISK_LOW_BYTES", "-1"),
        ("PACH_DISK_LOW_BYTES", "1e9"),
    ],
)
def test_bad_settings_are_refused_by_name(name: str, value: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        GuardSettings.from_env({name: value})
    assert name in str(err.value) and repr(value) in str(err.value)


def test_a_lost_log_refuses_all_but_health_and_the_exempt() -> None:
    guard = LogGuard(cast(Any, None), "EVENTS", exempt=("cmd.admin.Restore",))
    guard.current = GuardState(MISSING, log_missing("EVENTS"))
    for subject in ("cmd.pfs.CreateRepo", "qry.pfs.ListRepo", "cmd.admin.Extract"):
        with pytest.raises(EventLogLost, match="event log missing: the EVENTS stream is gone"):
            guard.admit(subject)
    guard.admit("qry.pfs.Health")
    guard.admit("cmd.admin.Restore")
    guard.admit("cmd.admin.RestoreParts_abc")
    guard.current = GuardState("ok", None)
    guard.admit("cmd.pfs.CreateRepo")


def test_disk_free_looks_at_the_nearest_existing_parent(tmp_path: Path) -> None:
    assert disk_free(tmp_path / "not" / "yet" / "made") > 0


def test_an_unreachable_event_store_is_left_to_the_handlers() -> None:
    guard = LogGuard(cast(Any, None), "EVENTS")
    guard.current = GuardState(UNREACHABLE, Unavailable("event store unreachable"))
    guard.admit("cmd.pfs.CreateRepo")
    assert not guard.ok  # (reactions and Health still hold)
