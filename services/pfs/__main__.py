"""``python -m services.pfs``: the pfs service."""

from libs.service import run_service
from services.pfs.entrypoints.nats import setup

if __name__ == "__main__":
    run_service("pfs", setup)
