"""Progress of long work, on stderr, for a person at a terminal.

``Meter`` redraws one line (``label: 12.5MiB / 40MiB (31%) 3/10 files,
8.2MiB/s``) at most every ``REDRAW_S`` and ends it with a newline when the
work is done; ``waiting`` prints one line saying what a command waits for.
Both are silent unless stderr is a terminal, so scripts and pipes see
exactly what they saw before.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from programs.pachctl import pretty

REDRAW_S = 0.1


def on_terminal(err: TextIO | None = None) -> bool:
    stream = sys.stderr if err is None else err
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Meter:
    """Bytes (and files) done of an optional total, redrawn in place."""

    def __init__(
        self,
        label: str,
        total_bytes: int | None = None,
        total_files: int | None = None,
        err: TextIO | None = None,
    ) -> None:
        self.err = sys.stderr if err is None else err
        self.live = on_terminal(self.err)
        self.label = label
        self.total_bytes = total_bytes
        self.total_files = total_files
        self.bytes = 0
        self.files = 0
        self._start = time.monotonic()
        self._shown = 0.0
        self._drawn = False
        self._lock = threading.Lock()  # get-file -r counts from several threads

    def add(self, nbytes: int = 0, files: int = 0) -> None:
        with self._lock:
            self.bytes += nbytes
            self.files += files
            if self.live and time.monotonic() - self._shown >= REDRAW_S:
                self._draw()

    def line(self) -> str:
        text = f"{self.label}: {pretty.size(self.bytes)}"
        if self.total_bytes:
            pct = min(100, int(100 * self.bytes / self.total_bytes))
            text += f" / {pretty.size(self.total_bytes)} ({pct}%)"
        if self.total_files is not None and self.total_files > 1:
            text += f" {self.files}/{self.total_files} files"
        elif self.total_files is None and self.files > 1:
            text += f" {self.files} files"
        elapsed = time.monotonic() - self._start
        if elapsed > 0.2:
            text += f", {pretty.size(int(self.bytes / elapsed))}/s"
        return text

    def _draw(self) -> None:
        self._shown = time.monotonic()
        self._drawn = True
        self.err.write("\r\x1b[K" + self.line())
        self.err.flush()

    def done(self) -> None:
        """The final line (only on a terminal)."""
        if not self.live:
            return
        self._draw()
        self.err.write("\n")
        self.err.flush()


def waiting(what: str, err: TextIO | None = None) -> None:
    """One line on a terminal's stderr: what a blocking command waits for."""
    stream = sys.stderr if err is None else err
    if on_terminal(stream):
        stream.write(f"waiting for {what}...\n")
        stream.flush()
