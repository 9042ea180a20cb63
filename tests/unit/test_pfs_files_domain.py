"""The commit aggregate's file rules: split numbering, deletes restarting
it, headers/footers, copies, and the ops finish-commit builds from them."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from google.protobuf.message import Message

from libs import trees
from libs.api.events import pfs_pb2 as ev
from libs.errors import FailedPrecondition, InvalidArgument
from services.pfs.domain import files
from services.pfs.domain.files import CommitWrites

REF = trees.DataRef("c" * 64, 0, 3)
ROOT = "a" * 64


def replay(events: Sequence[Message], state: CommitWrites | None = None) -> CommitWrites:
    state = state or CommitWrites()
    for e in events:
        state = files.evolve(state, e)
    return state


def decide(
    state: CommitWrites, writes: Sequence[files.Write], bases: dict[str, int] | None = None
) -> list[Message]:
    return list(files.write("data", "c1", writes, bases)(state))


def test_split_pieces_number_on_from_the_base_then_from_the_state() -> None:
    writes = [files.split("/s", [REF]), files.split("s/", [REF])]
    events = decide(CommitWrites(), writes, {"/s": 5})
    assert [(e.path, e.index) for e in events] == [("/s", 5), ("/s", 6)]  # type: ignore[attr-defined]
    state = replay(events)
    assert state.splits == {"/s": 7}
    more = decide(state, [files.split("/s", [REF])], {})
    assert [e.index for e in more] == [7]  # type: ignore[attr-defined]
    ops = files.as_ops(more[0])
    assert ops == [trees.Put("/s/0000000000000007", (REF,))]


def test_a_delete_restarts_split_numbering_at_or_below_it() -> None:
    state = replay(decide(CommitWrites(), [files.split("/a/s", [REF])], {"/a/s": 2}))
    assert state.splits == {"/a/s": 3}
    assert replay([files.delete("/b")], state).splits == {"/a/s": 3}
    after = replay([files.delete("/a")], state)
    assert after.splits == {"/a/s": 0} and after.deletes == 1
    assert [e.index for e in decide(after, [files.split("/a/s", [REF])])] == [0]  # type: ignore[attr-defined]
    assert replay([files.delete("/")], state).splits == {"/a/s": 0}


def test_a_delete_in_the_same_batch_restarts_the_base() -> None:
    events = decide(CommitWrites(), [files.delete("/s"), files.split("/s", [REF])], {"/s": 9})
    assert isinstance(events[0], ev.FileDeleted)
    assert events[1].index == 0  # type: ignore[attr-defined]


def test_a_split_directory_without_a_known_base_is_refused() -> None:
    with pytest.raises(FailedPrecondition, match="/s"):
        decide(CommitWrites(), [files.split("/s", [REF])], {})


def test_unnumbered_names_each_new_split_directory_once() -> None:
    state = CommitWrites(splits={"/old": 1})
    writes = [files.split("/new", [REF]), files.split("/old", [REF]), files.split("/new", [REF])]
    assert files.unnumbered(state, writes) == ["/new"]


def test_base_count_from_the_parent_tree() -> None:
    directory = trees.Node("s", trees.Kind.DIR, "h", 30, 4)
    a_file = trees.Node("s", trees.Kind.FILE, "h", 3, 1)
    assert files.base_count("/s", directory, deleted_in_commit=False) == 4
    assert files.base_count("/s", directory, deleted_in_commit=True) == 0
    assert files.base_count("/s", None, deleted_in_commit=False) == 0
    with pytest.raises(FailedPrecondition, match="cannot split into /s: it is a file"):
        files.base_count("/s", a_file, deleted_in_commit=False)
    assert files.base_count("/s", a_file, deleted_in_commit=True) == 0


def test_piece_names_are_sixteen_hex_digits() -> None:
    assert files.piece_path("/s", 255) == "/s/00000000000000ff"
    assert files.piece_path("/", 0) == "/0000000000000000"


def test_split_into_root_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="root"):
        files.split("/", [REF])


def test_a_sealed_commit_takes_no_writes() -> None:
    sealed = replay([ev.CommitWritesSealed(tree=ROOT)])
    with pytest.raises(FailedPrecondition, match="data/c1 has already been finished"):
        decide(sealed, [files.set_header("/d", [REF])])


def test_headers_and_footers_become_tree_ops() -> None:
    assert files.as_ops(files.set_header("d/", [REF])) == [trees.SetHeader("/d", (REF,))]
    assert files.as_ops(files.set_footer("/d", [])) == [trees.SetFooter("/d", ())]
    assert replay([files.set_header("/d", [REF])]).writes == 1


def test_an_overwriting_copy_replaces_by_reference() -> None:
    event = files.copy("src", "c0", ROOT, "dir", "/dst", overwrite=True)
    assert files.as_ops(event) == [trees.Delete("/dst"), trees.Copy(ROOT, "/dir", "/dst")]


def test_a_copy_without_overwrite_appends_files_and_sets_headers() -> None:
    event = files.copy("src", "c0", ROOT, "/dir", "/dst", overwrite=False)
    assert files.as_ops(event) == []  # needs the source tree read
    f = trees.Node("x", trees.Kind.FILE, "h", 3, 1)
    d = trees.Node("sub", trees.Kind.DIR, "h", 3, 1)
    assert files.copy_append_ops(event, "/dir/sub/x", f, [REF], (), ()) == [
        trees.Put("/dst/sub/x", (REF,), append=True)
    ]
    assert files.copy_append_ops(event, "/dir", d, (), [REF], ()) == [
        trees.SetHeader("/dst", (REF,))
    ]
    assert files.copy_append_ops(event, "/dir/sub", d, (), (), ()) == []
    whole = files.copy("src", "c0", ROOT, "/", "/", overwrite=False)
    assert files.copy_append_ops(whole, "/a/b", f, [REF], (), ()) == [
        trees.Put("/a/b", (REF,), append=True)
    ]
    into_root = files.copy("src", "c0", ROOT, "/dir", "/", overwrite=False)
    assert files.copy_append_ops(into_root, "/dir/x", f, [REF], (), ()) == [
        trees.Put("/x", (REF,), append=True)
    ]


def test_puts_in_a_row_are_one_event_with_the_same_writes_in_order() -> None:
    """A batch of put-file -r is recorded as one FilesPut per run of puts;
    the tree ops and the write count are those of the puts one by one."""
    writes: list[files.Write] = [
        files.put("/a", [REF], True),
        files.put("/b", [], False),
        files.delete("/c"),
        files.put("/d", [REF], True),
        files.put("/e", [REF], False),
        files.put("/f", [REF], True),
        files.set_header("/g", [REF]),
        files.put("/h", [REF], True),
    ]
    events = decide(CommitWrites(), writes)
    assert [type(e).__name__ for e in events] == [
        "FilesPut",
        "FileDeleted",
        "FilesPut",
        "HeaderSet",
        "FilePut",
    ]
    assert [p.path for p in events[0].puts] == ["/a", "/b"]  # type: ignore[attr-defined]
    ops = [op for e in events for op in files.as_ops(e)]
    assert ops == [op for w in writes if isinstance(w, Message) for op in files.as_ops(w)]
    assert replay(events).writes == len(writes)
    assert replay(events).deletes == 1
