"""get-file of a glob pattern (the matching files concatenated in path order,
each directory's header once before its files and its footer after) through
pachctl, gRPC and HTTP; put-header/put-footer with empty input delete the
header/footer; and every RPC nothing serves answers UNIMPLEMENTED with one
line saying so."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from tests.integration.test_pachctl_file_ops import fails
from tests.integration.test_pachctl_files import ok, pachctl
from tests.integration.test_python_pachyderm import run_scenario
from tests.support.cluster import Cluster, running

CSV = b"".join(b"%d,user%d\n" % (n, n) for n in range(7))
HEADER = b"id,name\n"
FOOTER = b"-- 7 rows\n"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from running(Path(tmp_path_factory.mktemp("fidelity-files")) / "data")


@pytest.fixture(scope="module")
def stub(cluster: Cluster) -> Iterator[pfs_pb2_grpc.APIStub]:
    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        yield pfs_pb2_grpc.APIStub(channel)


def get(stub: pfs_pb2_grpc.APIStub, repo: str, path: str, offset: int = 0, size: int = 0) -> bytes:
    req = pfs.GetFileRequest(
        file=pfs.File(commit=pfs.Commit(repo=pfs.Repo(name=repo), id="master"), path=path),
        offset_bytes=offset,
        size_bytes=size,
    )
    return b"".join(r.value for r in stub.GetFile(req, timeout=30))


def http_get(cluster: Cluster, url_path: str) -> tuple[int, bytes]:
    url = f"http://127.0.0.1:{cluster.http_port}{url_path}"
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def split_csv(cluster: Cluster, repo: str, path: str) -> None:
    ok(
        pachctl(
            cluster, "put-file", repo, "master", path, "--split", "line",
            "--target-file-datums", "2", "-f", "-", stdin=CSV,
        )
    )  # fmt: skip


def test_get_file_of_a_glob_reassembles_a_split_csv(
    cluster: Cluster, stub: pfs_pb2_grpc.APIStub
) -> None:
    ok(pachctl(cluster, "create-repo", "csvs"))
    split_csv(cluster, "csvs", "/users")
    ok(pachctl(cluster, "put-header", "csvs", "master", "/users", "-f", "-", stdin=HEADER))
    ok(pachctl(cluster, "put-footer", "csvs", "master", "/users", "-f", "-", stdin=FOOTER))
    whole = HEADER + CSV + FOOTER
    # pachctl: the header once, every piece in path order, the footer once.
    assert ok(pachctl(cluster, "get-file", "csvs", "master", "/users/*")) == whole
    # gRPC, whole and a byte range across pieces.
    assert get(stub, "csvs", "/users/*") == whole
    assert get(stub, "csvs", "/users/*", offset=5, size=20) == whole[5:25]
    assert get(stub, "csvs", "/users/*", offset=len(whole) - 3) == whole[-3:]
    # HTTP: the same bytes.
    assert http_get(cluster, "/pfs/csvs/master/users/*") == (200, whole)
    # Two split files: each directory's header and footer around its pieces.
    split_csv(cluster, "csvs", "/more")
    ok(pachctl(cluster, "put-header", "csvs", "master", "/more", "-f", "-", stdin=b"H2\n"))
    both = ok(pachctl(cluster, "get-file", "csvs", "master", "/*/*"))
    assert both == b"H2\n" + CSV + whole
    # A matching directory brings its own header and footer around what
    # matches below it (once, not once per file).
    deep = ok(pachctl(cluster, "get-file", "csvs", "master", "/users**"))
    assert deep == whole


def test_glob_of_plain_files_and_errors(cluster: Cluster, stub: pfs_pb2_grpc.APIStub) -> None:
    ok(pachctl(cluster, "create-repo", "plain"))
    ok(pachctl(cluster, "start-commit", "plain", "master"))
    for name, data in (("b", b"B"), ("a", b"A"), ("c/d", b"D"), ("ab", b"AB")):
        ok(pachctl(cluster, "put-file", "plain", "master", f"/{name}", "-f", "-", stdin=data))
    ok(pachctl(cluster, "finish-commit", "plain", "master"))
    assert ok(pachctl(cluster, "get-file", "plain", "master", "/a*")) == b"AAB"
    assert ok(pachctl(cluster, "get-file", "plain", "master", "/?")) == b"AB"
    assert ok(pachctl(cluster, "get-file", "plain", "master", "/**")) == b"AABBD"
    # Nothing matches: NOT_FOUND in one line, over every front door.
    fails(pachctl(cluster, "get-file", "plain", "master", "/z*"), "no file(s) found that match /z*")
    with pytest.raises(grpc.RpcError) as err:
        get(stub, "plain", "/z*")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert http_get(cluster, "/pfs/plain/master/z*")[0] == 404
    # Only a directory without header or footer matches: nothing to read.
    with pytest.raises(grpc.RpcError) as err:
        get(stub, "plain", "/[c]")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # A bad pattern is the client's mistake.
    with pytest.raises(grpc.RpcError) as err:
        get(stub, "plain", "/[a")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Climbing out of the tree, or a negative range, finds nothing and
    # breaks nothing.
    for pattern in ("/../*", "/a/../../*", "../**"):
        with pytest.raises(grpc.RpcError) as err:
            get(stub, "plain", pattern)
        assert err.value.code() in (
            grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.INVALID_ARGUMENT,
        ), (pattern, err.value.details())
    with pytest.raises(grpc.RpcError) as err:
        get(stub, "plain", "/a*", offset=-1)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ok(pachctl(cluster, "get-file", "plain", "master", "/a*")) == b"AAB"


def test_many_pieces_stream_in_pages(cluster: Cluster, stub: pfs_pb2_grpc.APIStub) -> None:
    """More pieces than one page of refs holds (4096): all come, in order."""
    lines = b"".join(b"%05d\n" % n for n in range(5000))
    ok(pachctl(cluster, "create-repo", "many"))
    ok(
        pachctl(
            cluster, "put-file", "many", "master", "/rows", "--split", "line",
            "--target-file-datums", "1", "-f", "-", stdin=lines,
        )
    )  # fmt: skip
    ok(pachctl(cluster, "put-footer", "many", "master", "/rows", "-f", "-", stdin=b"END\n"))
    assert get(stub, "many", "/rows/*") == lines + b"END\n"


def test_empty_put_header_and_footer_delete_them(cluster: Cluster) -> None:
    ok(pachctl(cluster, "create-repo", "hf"))
    split_csv(cluster, "hf", "/rows")
    ok(pachctl(cluster, "put-header", "hf", "master", "/rows", "-f", "-", stdin=HEADER))
    ok(pachctl(cluster, "put-footer", "hf", "master", "/rows", "-f", "-", stdin=FOOTER))
    assert ok(pachctl(cluster, "get-file", "hf", "master", "/rows/*")) == HEADER + CSV + FOOTER
    ok(pachctl(cluster, "put-header", "hf", "master", "/rows", "-f", "-", stdin=b""))
    assert ok(pachctl(cluster, "get-file", "hf", "master", "/rows/*")) == CSV + FOOTER
    ok(pachctl(cluster, "put-footer", "hf", "master", "/rows", "-f", "-", stdin=b""))
    assert ok(pachctl(cluster, "get-file", "hf", "master", "/rows/*")) == CSV
    # The directory has neither now: reading it as one file is refused.
    fails(pachctl(cluster, "get-file", "hf", "master", "/rows"), "use get-file -r -o")


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("/pfs.ObjectAPI/InspectObject", "pfs.ObjectAPI/InspectObject is unimplemented"),
        ("/pfs.ObjectAPI/GetObject", "objects are internal here"),
        ("/no.Such/Thing", "no such API in Pachyderm 1.7"),
    ],
)
def test_unserved_rpcs_say_so(cluster: Cluster, method: str, expected: str) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        unary: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(method)
        with pytest.raises(grpc.RpcError) as err:
            unary(b"", timeout=10)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        details = err.value.details() or ""
        assert expected in details and "\n" not in details, details
        streaming: grpc.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream(method)
        with pytest.raises(grpc.RpcError) as err:
            list(streaming(iter([b"", b""]), timeout=10))
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_glob_get_file_with_python_pachyderm(cluster: Cluster) -> None:
    seen = run_scenario(cluster, "pp_fidelity.py")
    rows = "".join(f"row {n}\n" for n in range(10))
    assert seen == {
        "pieces": 4,
        "whole": rows,
        "range": rows[6:18],
        "missing": ["NOT_FOUND", seen["missing"][1]],  # type: ignore[index]
    }
    assert "no file(s) found that match /nothing*" in seen["missing"][1]  # type: ignore[index]
