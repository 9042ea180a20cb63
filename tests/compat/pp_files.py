"""Run with the python-pachyderm 1.8.6 venv (.venv-compat): commits and
files through the published client; prints what it saw as JSON.

    PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python .venv-compat/bin/python \\
        tests/compat/pp_files.py HOST PORT
"""

from __future__ import annotations

import collections
import collections.abc
import hashlib
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
    pfs.create_repo("pp_data")
    big = bytes(range(256)) * 20_000  # 5 MB: several PutFile messages
    commit = pfs.start_commit("pp_data", "master")
    pfs.put_file_bytes(commit, "/big.bin", big)
    pfs.put_file_bytes(commit, "/dir/small.txt", b"hello\n")
    pfs.finish_commit(commit)
    seen["commit_id_len"] = len(commit.id)
    got = b"".join(pfs.get_file("pp_data/master", "/big.bin"))
    seen["big_sha256_equal"] = hashlib.sha256(got).digest() == hashlib.sha256(big).digest()
    seen["small"] = b"".join(pfs.get_file(("pp_data", commit.id), "/dir/small.txt")).decode()
    seen["root_listing"] = sorted(
        (f.file.path, f.file_type, f.size_bytes) for f in pfs.list_file("pp_data/master", "/")
    )
    seen["globbed"] = [f.file.path for f in pfs.glob_file("pp_data/master", "/*")]
    info = pfs.inspect_commit("pp_data/master")
    seen["inspected"] = {"id_matches": info.commit.id == commit.id, "size": info.size_bytes}

    with pfs.commit("pp_data", "master") as second:
        pfs.delete_file(second, "/dir/small.txt")
    seen["after_delete"] = sorted(f.file.path for f in pfs.list_file("pp_data/master", "/dir"))
    seen["commits"] = len(pfs.list_commit("pp_data"))
    seen["branches"] = [b.name for b in pfs.list_branch("pp_data")]
    # The client's flush_commit passes `commit=`, a field its own bundled
    # proto does not have (it is `commits`), so it cannot run at all; call the
    # same RPC through the client's stub and messages instead.
    proto = python_pachyderm.pfs_client.proto
    flush = proto.FlushCommitRequest(
        commits=[proto.Commit(repo=proto.Repo(name="pp_data"), id=second.id)]
    )
    flushed = list(pfs.stub.FlushCommit(flush, metadata=pfs.metadata))
    seen["flushed"] = len(flushed)
    stream = pfs.subscribe_commit("pp_data", "master")
    first = next(iter(stream))
    seen["subscribed_first_is_root"] = first.commit.id == commit.id
    stream.cancel()
    try:
        b"".join(pfs.get_file("pp_data/master", "/dir/small.txt"))
        seen["deleted_read"] = "found"
    except grpc.RpcError as err:
        seen["deleted_read"] = err.code().name
    pfs.delete_repo("pp_data", force=True)
    return seen


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]))))
