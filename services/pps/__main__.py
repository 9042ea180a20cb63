"""``python -m services.pps``: the pps service."""

from libs.service import run_service
from services.pps.entrypoints.nats import setup

if __name__ == "__main__":
    run_service("pps", setup)
