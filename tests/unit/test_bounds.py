"""The documented bounds (libs/bounds.py), one-line error messages, the
error table's new classes, and tree walks on paths far deeper than Python's
recursion limit."""

from __future__ import annotations

import errno
import sys
from typing import Any

import grpc
import pytest

from libs import bounds
from libs.api.pps import pps_pb2
from libs.errors import (
    DiskFull,
    Internal,
    InvalidArgument,
    LimitExceeded,
    PachError,
    from_unexpected,
    from_wire,
    grpc_status,
    http_status,
    one_line,
    to_wire,
)
from libs.pps.spec import check_spec, load_specs
from libs.trees import Delete, Put, diff, file_refs, get, glob, list_dir, normalize, walk
from libs.trees.stackless import Call, Descend, Return, flatten, run
from services.pfs.domain.names import validate_branch_name, validate_repo_name
from services.pps.domain.pipelines import validate_pipeline_name
from tests.unit.trees_support import CountingStore, apply, ref

# --- messages ----------------------------------------------------------------


def test_messages_are_one_escaped_bounded_line() -> None:
    err = InvalidArgument("bad name 'a\nb\r\tc\x1b\x7f\u2028\ud800' end")
    assert "\n" not in err.message and "\r" not in err.message
    assert "a\\nb\\r\\tc\\x1b\\x7f\\u2028\\ud800" in err.message
    assert err.message.isprintable()
    long = InvalidArgument("x" * 10_000)
    assert len(long.message) < 1100 and long.message.endswith("more characters)")
    assert one_line("plain text") == "plain text"
    # the wire form keeps it one line too
    back = from_wire({"type": "InvalidArgument", "message": "two\nlines", "fields": {}})
    assert back.message == "two\\nlines" and isinstance(back, InvalidArgument)


def test_disk_full_is_resource_exhausted_507_naming_the_path() -> None:
    err = from_unexpected(OSError(errno.ENOSPC, "No space left on device", "/data/objects/x"))
    assert isinstance(err, DiskFull)
    assert grpc_status(err) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert http_status(err) == 507
    assert "disk full" in err.message and "/data/objects/x" in err.message
    quota = from_unexpected(OSError(errno.EDQUOT, "Disk quota exceeded", "/q"))
    assert isinstance(quota, DiskFull) and "quota" in quota.message
    assert type(from_wire(to_wire(err))) is DiskFull


def test_a_full_jetstream_store_is_disk_full() -> None:
    from nats.js.errors import APIError

    err = from_unexpected(APIError(500, "insufficient storage resources available", 10047))
    assert isinstance(err, DiskFull) and "JetStream" in err.message


def test_other_unexpected_errors_are_internal_one_line() -> None:
    err = from_unexpected(ValueError("boom\nsecond line"), "cmd.pfs.X")
    assert isinstance(err, Internal) and "\n" not in err.message
    assert isinstance(from_unexpected(RecursionError()), InvalidArgument)
    same = InvalidArgument("x")
    assert from_unexpected(same) is same


# --- names ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("check", "limit", "what"),
    [
        (validate_repo_name, bounds.MAX_REPO_NAME, "repo name"),
        (validate_branch_name, bounds.MAX_BRANCH_NAME, "branch name"),
        (validate_pipeline_name, bounds.MAX_PIPELINE_NAME, "pipeline name"),
    ],
)
def test_name_lengths(check, limit: int, what: str) -> None:  # type: ignore[no-untyped-def]
    assert check("a" * limit) == "a" * limit
    with pytest.raises(LimitExceeded) as info:
        check("a" * (limit + 1))
    msg = info.value.message
    assert what in msg and f"limit of {limit} bytes" in msg and f"{limit + 1} bytes" in msg
    assert isinstance(info.value, InvalidArgument)
    huge = check.__name__  # a megabyte-long name is cut in the message
    with pytest.raises(LimitExceeded) as info:
        check("b" * 1_000_000)
    assert len(info.value.message) < 400, huge


def test_pipeline_name_fits_a_kubernetes_name() -> None:
    longest = f"pipeline-{'x' * bounds.MAX_PIPELINE_NAME}-v9999"
    assert len(longest) <= 63


# --- paths ----------------------------------------------------------------------


def test_path_bounds() -> None:
    deep = "/" + "/".join(["d"] * 2000)
    assert normalize(deep) == deep
    assert normalize("/" + "c" * 255) == "/" + "c" * 255
    with pytest.raises(LimitExceeded, match=r"path component.* 256 bytes, over the limit of 255"):
        normalize("/a/" + "c" * 256)
    with pytest.raises(LimitExceeded, match=r"path .* over the limit of 4096 bytes"):
        normalize("/" + "/".join(["abcdefg"] * 600))


def test_glob_bounds() -> None:
    from libs.trees.glob import compile_pattern

    compile_pattern("{" * 16 + "a" + "}" * 16)
    with pytest.raises(LimitExceeded, match="nested braces"):
        compile_pattern("{" * 400 + "a" + "}" * 400)
    with pytest.raises(LimitExceeded, match="4096 bytes"):
        compile_pattern("a" * 5000)


# --- specs -----------------------------------------------------------------------


def _nested(depth: int) -> pps_pb2.Input:
    node = pps_pb2.Input(atom=pps_pb2.AtomInput(repo="r", glob="/*"))
    for i in range(depth - 1):
        node = pps_pb2.Input(
            cross=[node, pps_pb2.Input(atom=pps_pb2.AtomInput(repo=f"s{i}", glob="/*"))]
        )
    return node


def _spec(depth: int) -> pps_pb2.CreatePipelineRequest:
    return pps_pb2.CreatePipelineRequest(
        pipeline=pps_pb2.Pipeline(name="p"),
        transform=pps_pb2.Transform(cmd=["true"]),
        input=_nested(depth),
    )


def test_input_nesting_depth() -> None:
    check_spec(_spec(bounds.MAX_INPUT_DEPTH))
    with pytest.raises(LimitExceeded, match="over the limit of 32 levels"):
        check_spec(_spec(bounds.MAX_INPUT_DEPTH + 1))


def test_json_and_yaml_spec_depth() -> None:
    with pytest.raises(LimitExceeded, match="levels of nesting"):
        load_specs("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InvalidArgument):
        load_specs("a: " + "[" * 5000 + "]" * 5000)
    deep_yaml = "".join(" " * i + "a:\n" for i in range(200)) + " " * 200 + "b: 1\n"
    with pytest.raises(InvalidArgument):
        load_specs(deep_yaml)
    assert bounds.json_depth('{"a": "[[[[", "b": [1, {"c": []}]}') == 4


# --- stackless -------------------------------------------------------------------


async def test_stackless_recursion_goes_past_the_limit() -> None:
    depth = sys.getrecursionlimit() * 3

    async def count(n: int):  # type: ignore[no-untyped-def]
        if n == 0:
            yield Return(0)
            return
        below = yield Call(count(n - 1))
        yield Return(below + 1)

    assert await run(count(depth)) == depth

    async def fails(n: int):  # type: ignore[no-untyped-def]
        if n == 0:
            raise InvalidArgument("bottom")
        try:
            got = yield Call(fails(n - 1))
        except InvalidArgument as err:
            yield Return(f"caught {err} at {n}")
            return
        yield Return(got)

    assert await run(fails(5)) == "caught bottom at 1"

    async def nest(n: int):  # type: ignore[no-untyped-def]
        yield n
        if n:
            yield Descend(nest(n - 1))
        yield -n

    items = [x async for x in flatten(nest(depth))]
    assert items[:3] == [depth, depth - 1, depth - 2] and len(items) == 2 * (depth + 1)


# --- trees at 1,000+ levels --------------------------------------------------------


async def test_trees_handle_paths_two_thousand_levels_deep(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = CountingStore(tmp_path / "objects")
    deep = "/" + "/".join(f"{i % 10}" for i in range(2000))  # ~4,000 bytes
    tree = await apply(store, None, Put(deep + "/x", [ref(1)]), Put("/top", [ref(2)]))
    assert tree.files == 2
    node = await get(store, tree.hash, deep + "/x")
    assert node is not None and node.size == 10
    assert await file_refs(store, node) == (ref(1),)
    walked = [p async for p, _ in walk(store, tree.hash)]
    assert len(walked) == 2000 + 3 and walked[-2] == deep + "/x"
    listed = [n.name async for n in list_dir(store, tree.hash, deep)]
    assert listed == ["x"]
    found = [p async for p, _ in glob(store, tree.hash, "/**x")]
    assert found == [deep + "/x"]
    literal = [p async for p, _ in glob(store, tree.hash, deep + "/*")]
    assert literal == [deep + "/x"]
    other = await apply(store, tree.hash, Put(deep + "/y", [ref(3)]))
    changes = [p async for p, _, _ in diff(store, tree.hash, other.hash)]
    assert changes == [deep + "/y"]
    gone = await apply(store, other.hash, Delete("/0"))
    assert [p async for p, _ in walk(store, gone.hash)] == ["/", "/top"]
    removed = [p async for p, _, _ in diff(store, other.hash, gone.hash)]
    assert len(removed) == 2000 + 2  # the dirs, x and y


def test_pach_error_root_unchanged() -> None:
    assert issubclass(LimitExceeded, InvalidArgument) and issubclass(DiskFull, PachError)


# --- the gateway's request check ----------------------------------------------------


def test_check_message_finds_names_and_paths_at_any_depth() -> None:
    from libs.api.pfs import pfs_pb2 as pfs

    ok = pfs.PutFileRequest(file=pfs.File(commit=pfs.Commit(repo=pfs.Repo(name="r")), path="/a"))
    bounds.check_message(ok)
    with pytest.raises(LimitExceeded, match="repo name"):
        bounds.check_message(
            pfs.PutFileRequest(file=pfs.File(commit=pfs.Commit(repo=pfs.Repo(name="r" * 64))))
        )
    with pytest.raises(LimitExceeded, match="path"):
        bounds.check_message(pfs.InspectFileRequest(file=pfs.File(path="/" + "x" * 300)))
    with pytest.raises(LimitExceeded, match="pipeline name"):
        bounds.check_message(
            pps_pb2.InspectPipelineRequest(pipeline=pps_pb2.Pipeline(name="p" * 49))
        )
    with pytest.raises(LimitExceeded, match="branch name"):
        bounds.check_message(pfs.CreateBranchRequest(branch=pfs.Branch(name="b" * 256)))


def test_check_message_reads_a_put_file_batch_entry_by_entry() -> None:
    from libs.api.pfs import pfs_pb2 as pfs

    def entry(repo: str = "r", path: str = "/a") -> pfs.PutFileRequest:
        return pfs.PutFileRequest(
            file=pfs.File(commit=pfs.Commit(repo=pfs.Repo(name=repo), id="master"), path=path)
        )

    bounds.check_message(pfs.PutFileRequest(batch=[entry(path=f"/{i}") for i in range(50)]))
    with pytest.raises(LimitExceeded, match="path"):
        bounds.check_message(pfs.PutFileRequest(batch=[entry(), entry(path="/" + "x" * 300)]))
    with pytest.raises(LimitExceeded, match="repo name"):
        bounds.check_message(pfs.PutFileRequest(batch=[entry(), entry(repo="r" * 64)]))
    # an entry with more than a file and bytes is walked whole
    nested = entry()
    nested.batch.append(entry(repo="r" * 64))
    with pytest.raises(LimitExceeded, match="repo name"):
        bounds.check_message(pfs.PutFileRequest(batch=[entry(), nested]))


# --- pachctl: no answer is not "cannot reach" ---------------------------------------------


def test_pachctl_says_no_answer_when_connected_and_cannot_reach_when_not() -> None:
    import time
    from concurrent import futures

    from programs.cluster.natsserver import free_port
    from programs.pachctl.address import parse_address
    from programs.pachctl.client import CannotReach, NoAnswer, Pachd

    def slow(request: bytes, context: grpc.ServicerContext) -> bytes:
        time.sleep(1.5)
        return b""

    handler = grpc.method_handlers_generic_handler(
        "pfs.API", {"CreateRepo": grpc.unary_unary_rpc_method_handler(slow)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with Pachd(parse_address(f"127.0.0.1:{port}"), timeout=0.5) as pachd:
            call: Any = pachd.channel.unary_unary("/pfs.API/CreateRepo")
            with pytest.raises(NoAnswer, match=r"did not answer within 0\.5s; the request may"):
                pachd.call(call, b"")
    finally:
        server.stop(0)
    with Pachd(parse_address(f"127.0.0.1:{free_port()}"), timeout=0.5) as pachd:
        call2: Any = pachd.channel.unary_unary("/pfs.API/CreateRepo")
        with pytest.raises(CannotReach):
            pachd.call(call2, b"")
