"""Run with the python-pachyderm 1.8.6 venv (.venv-compat), not ours: it
drives the published client against a gateway and prints what it saw as JSON.

    PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python .venv-compat/bin/python \\
        tests/compat/pp_repos.py HOST PORT
"""

from __future__ import annotations

import json
import sys
from typing import Any

import grpc
import python_pachyderm


def main(host: str, port: int) -> dict[str, Any]:
    pfs = python_pachyderm.PfsClient(host=host, port=port)
    seen: dict[str, Any] = {}
    pfs.create_repo("compat_images", description="from python-pachyderm")
    pfs.create_repo("compat_edges")
    seen["listed"] = [info.repo.name for info in pfs.list_repo()]
    info = pfs.inspect_repo("compat_images")
    seen["inspected"] = {
        "name": info.repo.name,
        "description": info.description,
        "size_bytes": info.size_bytes,
        "created": info.created.seconds,
    }
    try:
        pfs.create_repo("compat_images")
        seen["duplicate"] = "accepted"
    except grpc.RpcError as err:
        seen["duplicate"] = err.code().name
    try:
        pfs.inspect_repo("compat_missing")
        seen["missing"] = "found"
    except grpc.RpcError as err:
        seen["missing"] = err.code().name
    pfs.delete_repo("compat_edges")
    seen["after_delete"] = [info.repo.name for info in pfs.list_repo()]
    pfs.delete_repo(all=True)
    seen["after_delete_all"] = [info.repo.name for info in pfs.list_repo()]
    return seen


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]))))
