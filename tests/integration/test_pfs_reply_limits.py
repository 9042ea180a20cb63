"""A unary listing larger than the gateway's gRPC message limit is refused
with RESOURCE_EXHAUSTED naming the streaming RPC, which still works."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from tests.integration.test_pfs_file_ops import bulk_put
from tests.integration.test_pfs_files import commit, finish, start
from tests.support.cluster import Cluster

LIMIT = 256 * 1024


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pfs_pb2_grpc.APIStub]:
    data = tmp_path_factory.mktemp("pfs-limits") / "data"
    c = Cluster(data, PACH_GRPC_MAX_MESSAGE_BYTES=str(LIMIT)).start()
    try:
        c.wait_ready()
        with grpc.insecure_channel(f"127.0.0.1:{c.grpc_port}") as channel:
            stub = pfs_pb2_grpc.APIStub(channel)
            stub.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name="data")), timeout=10)
            yield stub
    finally:
        c.kill()


def test_unary_list_and_glob_over_the_limit_name_the_stream(api: pfs_pb2_grpc.APIStub) -> None:
    paths = [f"/many/file-{i:05d}" for i in range(5000)]
    cid = start(api)
    bulk_put(api, cid, paths)
    finish(api, cid)
    listing = pfs.ListFileRequest(file=pfs.File(commit=commit("master"), path="/many"))
    with pytest.raises(grpc.RpcError) as info:
        api.ListFile(listing, timeout=60)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "ListFileStream" in (info.value.details() or "")
    glob = pfs.GlobFileRequest(commit=commit("master"), pattern="/many/*")
    with pytest.raises(grpc.RpcError) as info:
        api.GlobFile(glob, timeout=60)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "GlobFileStream" in (info.value.details() or "")
    assert [i.file.path for i in api.ListFileStream(listing, timeout=60)] == paths
    assert sum(1 for _ in api.GlobFileStream(glob, timeout=60)) == len(paths)
    # A listing under the limit is still one unary reply.
    small = pfs.ListFileRequest(file=pfs.File(commit=commit("master"), path="/"))
    assert [i.file.path for i in api.ListFile(small, timeout=60).file_info] == ["/many"]
