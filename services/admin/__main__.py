"""``python -m services.admin``: the admin service (extract, restore,
inspect-cluster, the cluster's state)."""

if __name__ == "__main__":
    # Before any import: what this process never runs loads on first use only.
    from libs.lean_imports import for_services

    for_services()

    from libs.service import run_service
    from services.admin.entrypoints.nats import setup

    run_service("admin", setup)
