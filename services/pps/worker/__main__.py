"""``python -m services.pps.worker``: the worker process of one pipeline
(``PACH_PPS_PIPELINE``), started by pps."""

import os

# Who started us, read before the imports below take their time: if that
# process dies meanwhile, the worker still notices (it was reparented).
_PARENT = os.getppid()

from libs.service import run_service  # noqa: E402
from services.pps.worker.loop import SERVICE, die_with_parent, make_setup  # noqa: E402

if __name__ == "__main__":
    die_with_parent(_PARENT)
    run_service(SERVICE, make_setup(parent=_PARENT))
