"""``python -m services.pps.worker``: the worker process of one pipeline
(``PACH_PPS_PIPELINE``), started by pps."""

from libs.service import run_service
from services.pps.worker.loop import SERVICE, setup

if __name__ == "__main__":
    run_service(SERVICE, setup)
