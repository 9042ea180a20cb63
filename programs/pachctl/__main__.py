"""``pachctl`` / ``python -m programs.pachctl``."""

from __future__ import annotations

import os
import sys

from programs.pachctl.cli import run


def main() -> None:
    code = run(sys.argv[1:])
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``pachctl list-file … | head``): say nothing
        # more, and let the exit's own flush write to nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = code or 1
    sys.exit(code)


if __name__ == "__main__":
    main()
