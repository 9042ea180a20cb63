"""Run with the python-pachyderm 1.8.6 venv (.venv-compat): a split file put
through the published client comes back whole from get_file of a glob;
prints what it saw as JSON.

    PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python .venv-compat/bin/python \\
        tests/compat/pp_fidelity.py HOST PORT
"""

from __future__ import annotations

import collections
import collections.abc
import json
import sys
from typing import Any

import grpc
import python_pachyderm

# python-pachyderm 1.8.6 (2018) still uses collections.Iterable, which Python
# 3.10 removed; restore the alias for it. The client is otherwise unchanged.
collections.Iterable = collections.abc.Iterable  # type: ignore[attr-defined]


def main(host: str, port: int) -> dict[str, Any]:
    pfs = python_pachyderm.PfsClient(host=host, port=port)
    seen: dict[str, Any] = {}
    pfs.create_repo("pp_split")
    rows = b"".join(b"row %d\n" % n for n in range(10))
    commit = pfs.start_commit("pp_split", "master")
    pfs.put_file_bytes(commit, "/rows", rows, delimiter=python_pachyderm.LINE, target_file_datums=3)
    pfs.finish_commit(commit)
    seen["pieces"] = len(list(pfs.list_file("pp_split/master", "/rows")))
    seen["whole"] = b"".join(pfs.get_file("pp_split/master", "/rows/*")).decode()
    seen["range"] = b"".join(
        pfs.get_file("pp_split/master", "/rows/*", offset_bytes=6, size_bytes=12)
    ).decode()
    try:
        b"".join(pfs.get_file("pp_split/master", "/nothing*"))
        seen["missing"] = "no error"
    except grpc.RpcError as err:
        seen["missing"] = [err.code().name, err.details()]
    return seen


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]))))
