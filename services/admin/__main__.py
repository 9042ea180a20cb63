"""``python -m services.admin``: the admin service (extract, restore,
inspect-cluster, the cluster's state)."""

from libs.service import run_service
from services.admin.entrypoints.nats import setup

if __name__ == "__main__":
    run_service("admin", setup)
