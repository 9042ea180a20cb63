"""``python -m services.auth``: the auth service."""

from libs.service import run_service
from services.auth.entrypoints.nats import setup

if __name__ == "__main__":
    run_service("auth", setup)
