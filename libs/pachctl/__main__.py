"""``pachctl`` / ``python -m libs.pachctl``."""

from __future__ import annotations

import sys

from libs.pachctl.cli import run


def main() -> None:
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
