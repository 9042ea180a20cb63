"""``python -m services.enterprise``: the enterprise service."""

if __name__ == "__main__":
    # Before any import: what this process never runs loads on first use only.
    from libs.lean_imports import for_services

    for_services()

    from libs.service import run_service
    from services.enterprise.entrypoints.nats import setup

    run_service("enterprise", setup)
