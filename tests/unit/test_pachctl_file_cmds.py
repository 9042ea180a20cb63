"""pachctl's file commands without a server: argument checks, 1.7's path
naming for put-file, the PutFile messages, read-ahead order, the streaming
NAME TYPE SIZE table, inspect-file and diff-file text, and one-line usage
errors."""

from __future__ import annotations

import argparse
import io
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import grpc
import pytest

from libs.api.pfs import pfs_pb2 as pfs
from libs.errors import InvalidArgument
from programs.cluster.natsserver import free_port
from programs.pachctl.address import parse_address
from programs.pachctl.cli import build_parser, run
from programs.pachctl.client import CannotReach, Pachd, ServerError
from programs.pachctl.commands import file as filecmd
from programs.pachctl.commands import putfile
from programs.pachctl.tabwriter import StreamingTable


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def dests(*argv: str) -> list[tuple[str, str]]:
    args = parse(*argv)
    return [(p.source, p.dest) for p in putfile.plan(args, putfile.sources(args))]


def info(path: str, kind: pfs.FileType.ValueType = pfs.FILE, size: int = 0) -> pfs.FileInfo:
    return pfs.FileInfo(file=pfs.File(path=path), file_type=kind, size_bytes=size)


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "dir" / "sub").mkdir(parents=True)
    (tmp_path / "dir" / "a").write_bytes(b"a")
    (tmp_path / "dir" / "sub" / "b").write_bytes(b"b")
    (tmp_path / "one.txt").write_bytes(b"1")
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- put-file naming (1.7's putFileHelper / joinPaths) -------------------------


def test_no_path_names_the_file_by_its_source(tree: Path) -> None:
    assert dests("put-file", "r", "b", "-f", "one.txt") == [("one.txt", "one.txt")]
    assert dests("put-file", "r", "b", "-f", "./dir/a") == [("./dir/a", "dir/a")]
    assert dests("put-file", "r", "b", "-r", "-f", "dir") == [
        ("dir/a", "dir/a"),
        ("dir/sub/b", "dir/sub/b"),
    ]


def test_one_source_and_a_path_uses_the_path(tree: Path) -> None:
    assert dests("put-file", "r", "b", "/x", "-f", "one.txt") == [("one.txt", "/x")]
    assert dests("put-file", "r", "b", "/", "-r", "-f", "dir") == [
        ("dir/a", "/a"),
        ("dir/sub/b", "/sub/b"),
    ]
    assert dests("put-file", "r", "b", "/in", "-f", "-") == [("-", "/in")]


def test_several_sources_go_below_the_path(tree: Path) -> None:
    absolute = str(tree / "one.txt")
    got = dests("put-file", "r", "b", "/p", "-f", "one.txt", "-f", absolute)
    assert got == [("one.txt", "/p/one.txt"), (absolute, f"/p{absolute}")]


def test_urls_are_named_by_their_path(tree: Path) -> None:
    args = parse("put-file", "r", "b", "-f", "http://h:8/data/x.csv", "-r", "-f", "s3://bucket")
    puts = list(putfile.plan(args, putfile.sources(args)))
    assert [(p.dest, p.url, p.recursive) for p in puts] == [
        ("data/x.csv", True, True),
        ("", True, True),
    ]
    assert dests("put-file", "r", "b", "/y", "-f", "https://h/x") == [("https://h/x", "/y")]


def test_input_file_lists_sources(tree: Path) -> None:
    (tree / "list").write_text("one.txt\n\ndir/a\n")
    assert dests("put-file", "r", "b", "/l", "-i", "list") == [
        ("one.txt", "/l/one.txt"),
        ("dir/a", "/l/dir/a"),
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("put-file", "r", "b"), "must specify filename when reading data from stdin"),
        (("put-file", "r", "b", "/x", "-r"), "cannot set -r and read from stdin"),
        (("put-file", "r", "b", "/x", "-f", "dir"), "use -r"),
        (("put-file", "r", "b", "/x", "-f", "missing"), "missing: no such file"),
        (("put-file", "r", "b", "/", "-f", "one.txt", "-f", "./one.txt"), "multiple files"),
    ],
)
def test_bad_sources(tree: Path, argv: tuple[str, ...], message: str) -> None:
    args = parse(*argv)
    with pytest.raises(InvalidArgument, match=message):
        putfile.checked(args, putfile.sources(args))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--split", "xml"), "unrecognized delimiter 'xml'; only accepts 'json', 'line', or 'sql'"),
        (("--target-file-datums", "3"), "need --split"),
        (("--split", "line", "--target-file-bytes", "-1"), "cannot be negative"),
        (("-p", "0"), "at least 1"),
    ],
)
def test_flag_checks(extra: tuple[str, ...], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        putfile.check_flags(parse("put-file", "r", "b", "/x", *extra))


def test_go_join() -> None:
    assert putfile.go_join("", "a//b/./c") == "a/b/c"
    assert putfile.go_join("/p", "/abs/x") == "/p/abs/x"
    assert putfile.go_join("", "") == ""
    assert putfile.go_join("/", "x") == "/x"
    assert putfile.url_path("pfs://host/repo/branch/a/b") == "a/b"


# --- the PutFile messages ------------------------------------------------------


def _messages(
    argv: tuple[str, ...], files: list[tuple[str, list[bytes]]]
) -> list[pfs.PutFileRequest]:
    args = parse(*argv)
    pairs = [
        (putfile.Put(src, dest, url="://" in src), iter(blocks))
        for (src, blocks), dest in zip(files, ["/a", "/b", "/c"], strict=False)
    ]
    return _parsed(putfile.requests(args, pairs))


def _parsed(msgs: Iterable[pfs.PutFileRequest | putfile.Encoded]) -> list[pfs.PutFileRequest]:
    """The messages as the server parses them (batches are sent encoded)."""
    return [
        pfs.PutFileRequest.FromString(m.data) if isinstance(m, putfile.Encoded) else m for m in msgs
    ]


def test_each_file_starts_with_a_named_message() -> None:
    msgs = _messages(("put-file", "r", "br", "/x"), [("f1", [b"ab", b"cd"]), ("f2", [])])
    assert [(m.file.path, m.value) for m in msgs] == [("/a", b"ab"), ("", b"cd"), ("/b", b"")]
    assert msgs[0].file.commit.repo.name == "r" and msgs[0].file.commit.id == "br"
    assert not msgs[0].HasField("overwrite_index") and msgs[0].delimiter == pfs.NONE


def test_split_overwrite_and_url_fields() -> None:
    argv = ("put-file", "r", "b", "/x", "--split", "json", "--target-file-datums", "2", "-o")
    (msg,) = _messages(argv, [("f", [b"{}"])])
    assert msg.delimiter == pfs.JSON and msg.target_file_datums == 2
    assert msg.HasField("overwrite_index") and msg.overwrite_index.index == 0
    (url,) = _messages(("put-file", "r", "b", "/x"), [("http://h/x", [])])
    assert url.url == "http://h/x" and url.value == b"" and not url.recursive


def test_read_ahead_keeps_order_and_streams_blocks(tmp_path: Path) -> None:
    sizes = [0, 1, putfile.BLOCK * 3 + 5, 7, putfile.BLOCK]
    puts = []
    for n, size in enumerate(sizes):
        path = tmp_path / f"f{n}"
        path.write_bytes(bytes([n]) * size)
        puts.append(putfile.Put(str(path), f"/f{n}"))
    ahead = putfile.ReadAhead(3)
    try:
        got = [(put.dest, b"".join(blocks)) for put, blocks in ahead.files(puts)]
    finally:
        ahead.close()
    assert got == [(f"/f{n}", bytes([n]) * size) for n, size in enumerate(sizes)]


def test_read_ahead_close_releases_blocked_readers(tmp_path: Path) -> None:
    puts = []
    for n in range(4):
        (tmp_path / f"f{n}").write_bytes(b"x" * (putfile.BLOCK * 5))
        puts.append(putfile.Put(str(tmp_path / f"f{n}"), f"/f{n}"))
    before = threading.active_count()
    ahead = putfile.ReadAhead(4)
    files = ahead.files(puts)
    _, blocks = next(files)
    next(blocks)  # every reader now waits on a full queue
    ahead.close()  # must not hang
    assert threading.active_count() <= before


def test_read_ahead_reports_a_file_that_vanished(tmp_path: Path) -> None:
    ahead = putfile.ReadAhead(2)
    try:
        with pytest.raises(FileNotFoundError):
            for _, blocks in ahead.files([putfile.Put(str(tmp_path / "gone"), "/g")]):
                list(blocks)
    finally:
        ahead.close()


# --- tables and text -----------------------------------------------------------


def test_file_table_is_1_7s_tabwriter() -> None:
    text = filecmd.table([info("/a.txt", size=3), info("/dir", pfs.DIR, 1536)])
    # tabwriter.NewWriter(w, 0, 1, 1, ' ', 0): each column as wide as its widest cell + 1
    assert text.split("\n") == [
        "NAME   TYPE SIZE   ",
        "/a.txt file 3B     ",
        "/dir   dir  1.5KiB ",
        "",
    ]


def test_streaming_table_prints_the_header_again_every_50_lines() -> None:
    chunks: list[str] = []
    table = StreamingTable(chunks.append, "NAME\tTYPE\t\n")
    for n in range(120):
        table.row(f"/f{n}\tfile\t\n")
    table.flush()
    assert len(chunks) == 3  # 1 + 49, 1 + 49, 1 + 22
    lines = "".join(chunks).splitlines()
    assert len(lines) == 123
    assert [i for i, ln in enumerate(lines) if ln.startswith("NAME")] == [0, 50, 100]
    assert lines[1].split() == ["/f0", "file"] and lines[-1].split() == ["/f119", "file"]


def test_empty_listing_is_just_the_header() -> None:
    assert filecmd.table([]) == "NAME TYPE SIZE \n"


def test_detailed_file_info() -> None:
    d = info("/dir", pfs.DIR, 5)
    d.children.extend(["a", "b"])
    assert filecmd.detailed(d) == "Path: /dir\nType: dir\nSize: 5B\nChildren:  a  b \n"
    assert filecmd.detailed(info("/f", size=0)).splitlines()[-1] == "Children: "


def test_diff_file_text() -> None:
    diff = pfs.DiffFileResponse(new_files=[info("/n", size=2)], old_files=[info("/o", size=1)])
    assert filecmd.diff_text(diff).split("\n") == [
        "New Files:",
        "NAME TYPE SIZE ",
        "/n   file 2B   ",
        "Old Files:",
        "NAME TYPE SIZE ",
        "/o   file 1B   ",
        "",
    ]
    assert filecmd.diff_text(pfs.DiffFileResponse()) == ""


def test_stream_falls_back_to_unary_only_before_any_reply() -> None:
    def failing(after: int, code: grpc.StatusCode) -> Iterator[pfs.FileInfo]:
        for n in range(after):
            yield info(f"/s{n}")
        raise ServerError(code, "nope")

    unary = [info("/u")]
    got = filecmd._with_fallback(failing(0, grpc.StatusCode.UNIMPLEMENTED), lambda: unary)
    assert [i.file.path for i in got] == ["/u"]
    with pytest.raises(ServerError):
        list(filecmd._with_fallback(failing(1, grpc.StatusCode.UNIMPLEMENTED), lambda: unary))
    with pytest.raises(ServerError):
        list(filecmd._with_fallback(failing(0, grpc.StatusCode.NOT_FOUND), lambda: unary))


def test_local_paths_stay_under_the_output(tmp_path: Path) -> None:
    assert filecmd._local_path(tmp_path, "/d", "/d/x/y") == tmp_path / "x" / "y"
    assert filecmd._local_path(tmp_path, "/", "/top") == tmp_path / "top"
    with pytest.raises(InvalidArgument):
        filecmd._local_path(tmp_path, "/d", "/elsewhere/x")


# --- one-line errors, exit 1 (nothing here reaches a server) -------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("copy-file", "a", "b", "c", "d", "e"), "copy-file: the following arguments are required"),
        (("get-file", "r", "c"), "get-file: the following arguments are required: path"),
        (("put-header", "r", "b"), "put-header: the following arguments are required: path"),
        (("list-file", "r", "c", "p", "extra"), "unrecognized arguments: extra"),
        (("put-file", "r", "b", "-p", "many"), "invalid int value: 'many'"),
        (("get-file", "r", "c", "/p", "--bogus"), "unrecognized arguments: --bogus"),
        (("diff-file", "a", "b", "c", "d"), "diff-file expects either 3 or 6 args, got 4"),
        (("get-file", "r", "c", "/d", "-r"), "an output path needs to be specified"),
        (("put-file", "r", "b", "/x", "--split", "csv"), "unrecognized delimiter 'csv'"),
        (("put-file", "r", "b", "/x", "--target-file-bytes", "9"), "need --split"),
        (("put-file", "r", "b", "/x", "-f", "/no/such/file"), "/no/such/file: no such file"),
        (("put-header", "r", "b", "/d", "-f", "/no/such/header"), "No such file or directory"),
    ],
)
def test_usage_errors_are_one_line(
    argv: tuple[str, ...], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PACHD_ADDRESS", f"127.0.0.1:{free_port()}")  # nothing listens
    out, err = io.StringIO(), io.StringIO()
    assert run(list(argv), out, err) == 1
    lines = err.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pachctl: "), lines
    assert message in lines[0]
    assert out.getvalue() == ""


def test_flags_may_come_anywhere_as_with_cobra() -> None:
    args = parse("put-file", "-o", "r", "b", "-f", "-", "/x", "-p", "2")
    assert (args.repo, args.branch, args.path, args.files) == ("r", "b", "/x", ["-"])
    assert args.overwrite and args.parallelism == 2
    args = parse("diff-file", "a", "-s", "b", "c", "d", "e", "f")
    assert args.new == ["a", "b", "c", "d", "e", "f"] and args.shallow
    args = parse("start-commit", "r", "-p", "abc", "b")
    assert (args.repo, args.branch, args.parent) == ("r", "b", "abc")


class _Failed(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def test_unavailable_from_pachd_is_not_cannot_reach() -> None:
    pachd = Pachd(parse_address("127.0.0.1:1"))
    try:
        down = pachd.translate(
            _Failed(
                grpc.StatusCode.UNAVAILABLE,
                "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
                "Failed to connect to remote host: Connection refused",
            )
        )
        assert isinstance(down, CannotReach) and str(down).endswith("connection refused")
        url = pachd.translate(
            _Failed(grpc.StatusCode.UNAVAILABLE, "put-file from http://h/x: cannot connect")
        )
        assert isinstance(url, ServerError)
        assert str(url) == "put-file from http://h/x: cannot connect (UNAVAILABLE)"
    finally:
        pachd.channel.close()


# --- batches of small files ------------------------------------------------------


def test_small_files_read_whole_go_several_to_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(putfile, "BATCH_FILES", 3)
    args = parse("put-file", "r", "br", "/x", "-o")
    whole = [(putfile.Put(f"s{i}", f"/s{i}"), putfile.Whole(b"%d" % i)) for i in range(7)]
    streamed = (putfile.Put("big", "/big"), iter([b"ab", b"cd"]))
    msgs = _parsed(putfile.requests(args, [*whole[:4], streamed, *whole[4:]]))
    shapes = [[e.file.path for e in m.batch] if m.batch else m.file.path for m in msgs]
    assert shapes == [["/s0", "/s1", "/s2"], "/s3", "/big", "", ["/s4", "/s5", "/s6"]]
    first = msgs[0].batch[0]
    assert first.value == b"0" and first.HasField("overwrite_index")
    assert first.file.commit.repo.name == "r" and first.file.commit.id == "br"
    assert not msgs[0].HasField("file") and not msgs[0].value  # a batch sets nothing else


@pytest.mark.parametrize(
    "flags",
    [(), ("-o",), ("--split", "line", "--target-file-datums", "3"), ("-o", "--split", "json")],
)
def test_encoded_entries_are_the_messages_protobuf_writes(flags: tuple[str, ...]) -> None:
    """Batch entries are written by hand: byte for byte what protobuf writes
    for the same message (a stock parser reads them the same)."""
    args = parse("put-file", "rëpo", "brånch", "/x", *flags)
    cases = [("/a", b""), ("/dir/ñ ü", b"x" * 300), ("/" + "p" * 200, b"\x00" * 70_000)]
    whole = [
        (putfile.Put(f"s{i}", dest), putfile.Whole(data)) for i, (dest, data) in enumerate(cases)
    ]
    (raw,) = list(putfile.requests(args, whole))
    assert isinstance(raw, putfile.Encoded) and raw.files == 3
    assert raw.nbytes == sum(len(d) for _, d in cases)
    want = pfs.PutFileRequest()
    for dest, data in cases:
        entry = want.batch.add(file=putfile._file("rëpo", "brånch", dest), value=data)
        entry.MergeFrom(putfile._options(args))
    assert raw.data == want.SerializeToString(deterministic=True)
    assert pfs.PutFileRequest.FromString(raw.data) == want


def test_a_batch_is_cut_at_about_batch_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(putfile, "BATCH_BYTES", 10_000)
    args = parse("put-file", "r", "br", "/x")
    whole = [(putfile.Put(f"s{i}", f"/s{i}"), putfile.Whole(b"z" * 4000)) for i in range(6)]
    msgs = _parsed(putfile.requests(args, whole))
    assert [len(m.batch) for m in msgs] == [3, 3]
    assert all(m.ByteSize() < 2 * 10_000 for m in msgs)


def test_read_ahead_hands_small_files_whole(tmp_path: Path) -> None:
    (tmp_path / "small").write_bytes(b"s" * 10)
    (tmp_path / "big").write_bytes(b"b" * (putfile.SMALL_FILE + 1))
    ahead = putfile.ReadAhead(2)
    try:
        puts = [putfile.Put(str(tmp_path / n), f"/{n}") for n in ("small", "big")]
        got = [(put.dest, blocks) for put, blocks in ahead.files(puts)]
        kinds = [isinstance(blocks, putfile.Whole) for _, blocks in got]
        assert kinds == [True, False]
        assert b"".join(got[1][1]) == b"b" * (putfile.SMALL_FILE + 1)
    finally:
        ahead.close()


def test_walk_names_files_as_before(tmp_path: Path) -> None:
    for rel in ("a/b/c", "a/d", "e"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    for dest, want in (
        ("/in", ["/in/a/b/c", "/in/a/d", "/in/e"]),
        ("/", ["/a/b/c", "/a/d", "/e"]),
        ("in/", ["in/a/b/c", "in/a/d", "in/e"]),
        ("", ["a/b/c", "a/d", "e"]),
    ):
        assert sorted(p.dest for p in putfile._local(str(tmp_path), dest, True)) == want, dest
