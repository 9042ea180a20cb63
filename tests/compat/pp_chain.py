"""Run with the python-pachyderm 1.8.6 venv (.venv-compat): a chain
pp_src -> pp_u1 -> pp_d1 and a cross of pp_src and pp_u1, then
update-pipeline pp_u1 (plain, then with reprocess) through the published
client; after each update a flush of u1's new head, and what d1 and the
cross hold, with their heads' provenance; prints what it saw as JSON.

    PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python .venv-compat/bin/python \\
        tests/compat/pp_chain.py HOST PORT
"""

from __future__ import annotations

import collections
import collections.abc
import json
import sys
from typing import Any

import python_pachyderm

# See pp_files.py: the 2018 client still uses collections.Iterable.
collections.Iterable = collections.abc.Iterable  # type: ignore[attr-defined]


def main(host: str, port: int) -> dict[str, Any]:
    pfs = python_pachyderm.PfsClient(host=host, port=port)
    pps = python_pachyderm.PpsClient(host=host, port=port)
    proto = python_pachyderm.pfs_client.proto

    def upstream(version: str, **flags: Any) -> None:
        pps.create_pipeline(
            "pp_u1",
            transform=python_pachyderm.Transform(
                cmd=["sh"],
                stdin=["cp -r /pfs/pp_src/. /pfs/out/", f"echo {version} > /pfs/out/ver"],
            ),
            input=python_pachyderm.Input(atom=python_pachyderm.AtomInput(repo="pp_src", glob="/")),
            **flags,
        )

    def flush(repo: str, commit_id: str) -> list[str]:
        # The client's flush_commit sets a field its own proto does not have
        # (see pp_files.py): the same RPC through its stub.
        req = proto.FlushCommitRequest(
            commits=[proto.Commit(repo=proto.Repo(name=repo), id=commit_id)]
        )
        return sorted(i.commit.repo.name for i in pfs.stub.FlushCommit(req, metadata=pfs.metadata))

    def read(repo: str, path: str) -> str:
        return b"".join(pfs.get_file(f"{repo}/master", path)).decode()

    def snapshot() -> dict[str, Any]:
        u1 = pfs.inspect_commit("pp_u1/master").commit.id
        seen: dict[str, Any] = {"u1_ver": read("pp_u1", "/ver")}
        for repo in ("pp_d1", "pp_x"):
            head = pfs.inspect_commit(f"{repo}/master")
            prov = {c.repo.name: c.id for c in head.provenance}
            seen[repo] = {
                "finished": head.HasField("finished"),
                "on_new_u1": prov.get("pp_u1") == u1,
            }
        seen["d1_ver"] = read("pp_d1", "/ver")
        seen["x_both"] = read("pp_x", "/both")
        return seen

    pfs.create_repo("pp_src")
    with pfs.commit("pp_src", "master") as commit:
        pfs.put_file_bytes(commit, "/a", b"a\n")
    upstream("v1")
    pps.create_pipeline(
        "pp_d1",
        transform=python_pachyderm.Transform(cmd=["sh"], stdin=["cp -r /pfs/pp_u1/. /pfs/out/"]),
        input=python_pachyderm.Input(atom=python_pachyderm.AtomInput(repo="pp_u1", glob="/")),
    )
    pps.create_pipeline(
        "pp_x",
        transform=python_pachyderm.Transform(
            cmd=["sh"], stdin=["cat /pfs/pp_src/a /pfs/pp_u1/ver > /pfs/out/both"]
        ),
        input=python_pachyderm.Input(
            cross=[
                python_pachyderm.Input(atom=python_pachyderm.AtomInput(repo="pp_src", glob="/")),
                python_pachyderm.Input(atom=python_pachyderm.AtomInput(repo="pp_u1", glob="/")),
            ]
        ),
    )
    seen: dict[str, Any] = {"flushed_src": flush("pp_src", commit.id)}
    seen["created"] = snapshot()

    before = pfs.inspect_commit("pp_u1/master").commit.id
    upstream("v2", update=True)
    head = pfs.inspect_commit("pp_u1/master").commit.id
    seen["updated_new_u1_commit"] = head != before
    seen["flushed_update"] = flush("pp_u1", head)
    seen["updated"] = snapshot()

    before = head
    upstream("v3", update=True, reprocess=True)
    head = pfs.inspect_commit("pp_u1/master").commit.id
    seen["reprocessed_new_u1_commit"] = head != before
    seen["flushed_reprocess"] = flush("pp_u1", head)
    seen["reprocessed"] = snapshot()
    return seen


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]))))
