"""Run with the python-pachyderm 1.8.6 venv (.venv-compat), not ours: the
published client, given an auth token (sent as ``authn-token`` metadata),
against an auth-activated gateway; prints what it saw as JSON.

    PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python .venv-compat/bin/python \\
        tests/compat/pp_auth.py HOST PORT TOKEN OTHER_TOKEN
"""

from __future__ import annotations

import collections
import collections.abc
import json
import sys
from typing import Any

import grpc
import python_pachyderm

# python-pachyderm 1.8.6 (2018) still uses collections.Iterable, gone since
# Python 3.10.
collections.Iterable = collections.abc.Iterable  # type: ignore[attr-defined]


def code_of(call: Any) -> str:
    try:
        call()
    except grpc.RpcError as err:
        return str(err.code().name)
    return "OK"


def main(host: str, port: int, token: str, other: str) -> dict[str, Any]:
    pfs = python_pachyderm.PfsClient(host=host, port=port, auth_token=token)
    pps = python_pachyderm.PpsClient(host=host, port=port, auth_token=token)
    seen: dict[str, Any] = {}
    pfs.create_repo("compat_auth")
    with pfs.commit("compat_auth", "master") as commit:
        pfs.put_file_bytes(commit, "/hello.txt", b"hello\n")
    seen["listed"] = [info.repo.name for info in pfs.list_repo()]
    seen["content"] = b"".join(pfs.get_file("compat_auth/master", "/hello.txt")).decode()
    seen["pipelines"] = [p.pipeline.name for p in pps.list_pipeline().pipeline_info]
    anonymous = python_pachyderm.PfsClient(host=host, port=port)
    seen["anonymous"] = code_of(lambda: anonymous.list_repo())
    stranger = python_pachyderm.PfsClient(host=host, port=port, auth_token=other)
    seen["stranger"] = code_of(lambda: stranger.inspect_repo("compat_auth"))
    return seen


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4])))
