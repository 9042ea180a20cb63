"""The back-off of the gateway's waits: a bus request cannot wait long, so
a wait (a job or a commit to finish, the next log lines) asks again, first
after ``FIRST_POLL`` seconds, then doubling up to ``LAST_POLL``."""

from __future__ import annotations

FIRST_POLL = 0.02
LAST_POLL = 0.5


def next_poll(delay: float) -> float:
    """The delay after ``delay``: twice as long, up to ``LAST_POLL``."""
    return min(delay * 2, LAST_POLL)
