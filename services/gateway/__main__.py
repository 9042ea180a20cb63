"""``python -m services.gateway``: gRPC + HTTP front door of the cluster."""

if __name__ == "__main__":
    # Before any import: what this process never runs loads on first use only.
    from libs.lean_imports import for_services

    for_services()

    from libs.service import run_service
    from services.gateway.entrypoints.setup import setup

    run_service("gateway", setup)
