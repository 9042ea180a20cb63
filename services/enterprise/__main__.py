"""``python -m services.enterprise``: the enterprise service."""

from libs.service import run_service
from services.enterprise.entrypoints.nats import setup

if __name__ == "__main__":
    run_service("enterprise", setup)
