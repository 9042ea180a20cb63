"""``python -m services.gateway``: gRPC + HTTP front door of the cluster."""

from libs.service import run_service
from services.gateway.entrypoints.setup import setup

if __name__ == "__main__":
    run_service("gateway", setup)
