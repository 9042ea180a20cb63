"""Go's ``text/tabwriter`` layout, as Pachyderm's CLI uses it
(``tabwriter.NewWriter(w, 20, 1, 3, ' ', 0)``).

Cells are tab-terminated; a column block is a run of consecutive lines that
have a cell in that column, and every cell of a block is padded to
``max(minwidth, widest + padding)``. The text after a line's last tab is not
part of any column and is written as is (so ``"a\\tb\\t\\n"`` pads ``b`` too,
exactly like Go).
"""

from __future__ import annotations

from collections.abc import Callable

MINWIDTH = 20
PADDING = 3


def format_table(text: str, minwidth: int = MINWIDTH, padding: int = PADDING) -> str:
    lines = [line.split("\t") for line in text.split("\n")]
    out: list[str] = []
    _format(lines, 0, len(lines), [], minwidth, padding, out)
    return "\n".join(out)


def _write(lines: list[list[str]], start: int, end: int, widths: list[int], out: list[str]) -> None:
    for cells in lines[start:end]:
        parts = []
        for j, cell in enumerate(cells):
            if j < len(cells) - 1 and j < len(widths):
                parts.append(cell.ljust(widths[j]))
            else:
                parts.append(cell)
        out.append("".join(parts))


def _format(
    lines: list[list[str]],
    line0: int,
    line1: int,
    widths: list[int],
    minwidth: int,
    padding: int,
    out: list[str],
) -> None:
    column = len(widths)
    this = line0
    while this < line1:
        if column >= len(lines[this]) - 1:
            this += 1
            continue
        # a block of lines with a cell in this column starts here
        _write(lines, line0, this, widths, out)
        line0 = this
        width = minwidth
        while this < line1 and column < len(lines[this]) - 1:
            width = max(width, len(lines[this][column]) + padding)
            this += 1
        _format(lines, line0, this, [*widths, width], minwidth, padding, out)
        line0 = this
    _write(lines, line0, line1, widths, out)


# Pachyderm's own streaming writer (src/server/pkg/tabwriter), used by the
# listing commands: ``text/tabwriter.NewWriter(w, 0, 1, 1, ' ', 0)`` flushed
# every ``TERM_HEIGHT`` lines, the header printed again after each flush.
TERM_HEIGHT = 50


class StreamingTable:
    """Rows go out in blocks of at most ``TERM_HEIGHT`` lines (header
    included), so a listing of any length takes constant memory."""

    def __init__(self, write: Callable[[str], object], header: str) -> None:
        if not header.endswith("\n"):
            raise ValueError("a table header must end in a new line")
        self._write = write
        self._header = header
        self._pending: list[str] = [header]
        self._lines = 1

    def row(self, line: str) -> None:
        if self._lines >= TERM_HEIGHT:
            self.flush()
            self._pending.append(self._header)
            self._lines += 1
        self._lines += line.count("\n")
        self._pending.append(line)

    def flush(self) -> None:
        self._lines = 0
        if self._pending:
            self._write(format_table("".join(self._pending), minwidth=0, padding=1))
            self._pending = []
