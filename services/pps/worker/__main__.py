"""``python -m services.pps.worker``: the worker process of one pipeline
(``PACH_PPS_PIPELINE``), started by pps."""

import os

# Who started us, read before the imports below take their time: if that
# process dies meanwhile, the worker still notices (it was reparented).
_PARENT = os.getppid()

if __name__ == "__main__":
    # Before any import: what this process never runs loads on first use only.
    from libs.lean_imports import for_services

    for_services()

    from libs.service import run_service
    from services.pps.worker.loop import SERVICE, die_with_parent, make_setup

    die_with_parent(_PARENT)
    run_service(SERVICE, make_setup(parent=_PARENT))
