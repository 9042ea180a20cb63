"""Build the golden scenario on a real cluster, extract it, record its answers.

    .venv/bin/python tests/golden/make_golden.py --version 2 [--out tests/golden]

starts an embedded cluster (``tests/support/cluster.py``, the code of the
checkout this file is in) in a temporary data dir, builds the scenario below
through the public gRPC API, waits until every job and output commit is
finished, extracts the cluster with the admin engine
(``services.admin.app.extract``, objects included) to ``extract-v<N>.pachext``
and writes what the cluster answers to ``answers-v<N>.json``.
``tests/integration/test_migrations.py`` restores each extract into the
current code and compares every answer.

The scenario: repo ``images`` (two commits: /a.txt /b.txt /c.txt, then a
line appended to /a.txt — put-file appends, as in 1.7 — and /d.txt added)
and repo ``params`` (one commit: /scale); pipeline
``copy`` (atom images /*), ``pair`` (cross of images /* and params /) and
``picky`` (atom images /*, its datum /c.txt fails, datum_tries 1), so each
has a first job that processes every datum and a second job that skips the
unchanged ones.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import nats
from google.protobuf import json_format
from google.protobuf.message import Message

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from libs.api.events import pfs_pb2 as pfs_events  # noqa: E402
from libs.api.pfs import pfs_pb2 as pfs  # noqa: E402
from libs.api.pfs import pfs_pb2_grpc  # noqa: E402
from libs.api.pps import pps_pb2 as pps  # noqa: E402
from libs.api.pps import pps_pb2_grpc  # noqa: E402
from libs.events import EventRegistry  # noqa: E402
from libs.objects import LocalObjectStore  # noqa: E402
from services.admin.app.extract import extract_frames  # noqa: E402
from services.pps.domain.events import registry as pps_registry  # noqa: E402
from tests.support.cluster import Cluster  # noqa: E402

FIRST = {"/a.txt": b"alpha\n", "/b.txt": b"bravo\n", "/c.txt": b"charlie\n"}
SECOND = {"/a.txt": b"alpha, again\n", "/d.txt": b"delta\n"}
PARAMS = {"/scale": b"2\n"}
PIPELINES = ("copy", "pair", "picky")
JOBS_EXPECTED = 6  # two per pipeline


def cluster_registry() -> EventRegistry:
    """Every event the cluster writes (pfs and pps), with pps's upcasters."""
    reg = pps_registry()
    reg.register_module(pfs_events)
    return reg


def as_dict(msg: Message) -> dict[str, Any]:
    """A message in the normalised JSON form the golden answers use."""
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def _atom(repo: str, glob: str) -> pps.Input:
    return pps.Input(atom=pps.AtomInput(repo=repo, glob=glob))


def pipeline_requests() -> Iterator[pps.CreatePipelineRequest]:
    def req(name: str, script: str, inp: pps.Input) -> pps.CreatePipelineRequest:
        return pps.CreatePipelineRequest(
            pipeline=pps.Pipeline(name=name),
            transform=pps.Transform(cmd=["sh"], stdin=[script]),
            input=inp,
        )

    yield req("copy", "cp /pfs/images/* /pfs/out/", _atom("images", "/*"))
    yield req(
        "pair",
        'for f in /pfs/images/*; do echo "$(basename $f) x$(cat /pfs/params/scale)" '
        ">> /pfs/out/pairs; done",
        pps.Input(cross=[_atom("images", "/*"), _atom("params", "/")]),
    )
    picky = req(
        "picky",
        "for f in /pfs/images/*; do case $f in *c.txt) echo no c >&2; exit 1;; esac; "
        "cp $f /pfs/out/; done",
        _atom("images", "/*"),
    )
    picky.datum_tries = 1
    yield picky


class Scenario:
    """The scenario's calls over the cluster's public gRPC API."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.pfs = pfs_pb2_grpc.APIStub(channel)
        self.pps = pps_pb2_grpc.APIStub(channel)

    def commit(self, repo: str, files: dict[str, bytes]) -> None:
        commit = self.pfs.StartCommit(
            pfs.StartCommitRequest(parent=pfs.Commit(repo=pfs.Repo(name=repo)), branch="master")
        )
        puts = (
            pfs.PutFileRequest(file=pfs.File(commit=commit, path=path), value=data)
            for path, data in files.items()
        )
        self.pfs.PutFile(puts)
        self.pfs.FinishCommit(pfs.FinishCommitRequest(commit=commit))

    def build(self) -> None:
        for repo in ("images", "params"):
            self.pfs.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name=repo)))
        self.commit("params", PARAMS)
        self.commit("images", FIRST)
        for req in pipeline_requests():
            self.pps.CreatePipeline(req)
        self.wait_jobs(len(PIPELINES))
        self.commit("images", SECOND)
        self.wait_jobs(JOBS_EXPECTED)

    def wait_jobs(self, n: int, timeout: float = 180.0) -> None:
        """Until ``n`` jobs exist, all finished, and their output commits too."""
        deadline = time.monotonic() + timeout
        while True:
            infos = self.pps.ListJob(pps.ListJobRequest()).job_info
            done = [j for j in infos if j.HasField("finished")]
            if len(infos) >= n and len(done) == len(infos):
                commits = [
                    self.pfs.InspectCommit(pfs.InspectCommitRequest(commit=j.output_commit))
                    for j in infos
                ]
                if all(c.HasField("finished") for c in commits):
                    return
            if time.monotonic() > deadline:
                raise TimeoutError([(j.job.id, j.state, j.reason) for j in infos])
            time.sleep(0.2)


def record_answers(channel: grpc.Channel) -> dict[str, Any]:
    """What the cluster answers about the scenario, in the golden JSON form:
    ListJob, InspectJob, ListDatum and InspectDatum of every job and datum,
    and every output commit's files (ListFile, and GetFile's bytes)."""
    pfs_api = pfs_pb2_grpc.APIStub(channel)
    pps_api = pps_pb2_grpc.APIStub(channel)
    listed = pps_api.ListJob(pps.ListJobRequest())
    out: dict[str, Any] = {
        "list_job": as_dict(listed),
        "inspect_job": {},
        "list_datum": {},
        "inspect_datum": {},
        "output_files": {},
    }
    for job in listed.job_info:
        job_id = job.job.id
        info = pps_api.InspectJob(pps.InspectJobRequest(job=job.job))
        out["inspect_job"][job_id] = as_dict(info)
        datums = pps_api.ListDatum(pps.ListDatumRequest(job=job.job))
        out["list_datum"][job_id] = as_dict(datums)
        for d in datums.datum_infos:
            got = pps_api.InspectDatum(pps.InspectDatumRequest(datum=d.datum))
            out["inspect_datum"][f"{job_id}/{d.datum.id}"] = as_dict(got)
        commit = job.output_commit
        key = f"{commit.repo.name}@{commit.id}"
        out["output_files"][key] = _files(pfs_api, commit, "/")
    return out


def _files(api: pfs_pb2_grpc.APIStub, commit: pfs.Commit, path: str) -> list[Any]:
    listed = api.ListFile(pfs.ListFileRequest(file=pfs.File(commit=commit, path=path)))
    rows: list[Any] = []
    for info in listed.file_info:
        row: dict[str, Any] = {"info": as_dict(info)}
        if info.file_type == pfs.DIR:
            row["children"] = _files(api, commit, info.file.path)
        else:
            chunks = api.GetFile(pfs.GetFileRequest(file=info.file))
            data = b"".join(c.value for c in chunks)
            row["content"] = data.decode("utf-8", "backslashreplace")
        rows.append(row)
    return rows


async def write_extract(cluster: Cluster, path: Path) -> None:
    nc = await nats.connect(cluster.state()["nats"]["url"])
    try:
        from services.admin.adapters.cluster_state import ClusterState

        cluster_id = await (await ClusterState.open(nc.jetstream())).cluster_id()
        store = LocalObjectStore(cluster.data_dir / "objects")
        frames = extract_frames(nc.jetstream(), store, cluster_registry(), cluster_id=cluster_id)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            async for data in frames:
                f.write(data)
        tmp.replace(path)
    finally:
        await nc.close()


def dump_answers(answers: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(answers, indent=1, sort_keys=True) + "\n")


def make(version: int, out_dir: Path, work: Path) -> None:
    import services.pps

    print(f"code: {services.pps.__file__}", flush=True)
    cluster = Cluster(work / "data").start()
    try:
        state = cluster.wait_ready(60)
        with grpc.insecure_channel(state["grpc_address"]) as channel:
            Scenario(channel).build()
            time.sleep(1.0)  # reactions settle (their floors in the header)
            answers = record_answers(channel)
        asyncio.run(write_extract(cluster, out_dir / f"extract-v{version}.pachext"))
        dump_answers(answers, out_dir / f"answers-v{version}.json")
    finally:
        cluster.kill()
    log = cluster.log.read_text(errors="replace")
    print(f"launcher log: {cluster.log} ({len(log)} chars)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--version", type=int, required=True, help="schema version label")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--work", type=Path, default=None, help="scratch dir (kept)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        make(args.version, args.out, args.work)
        return
    with tempfile.TemporaryDirectory(prefix="golden-") as tmp:
        make(args.version, args.out, Path(tmp))


if __name__ == "__main__":
    main()
