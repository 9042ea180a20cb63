"""The repo aggregate's decisions, without any I/O."""

from __future__ import annotations

import pytest

from libs.api.events import pfs_pb2 as ev
from libs.errors import AlreadyExists, InvalidArgument, NotFound
from services.pfs.domain import repo


def state_after(*events: object) -> repo.Repo:
    s = repo.Repo()
    for e in events:
        s = repo.evolve(s, e)  # type: ignore[arg-type]
    return s


def test_create_then_update_then_delete() -> None:
    created = repo.create_repo("images", "pics", update=False)(repo.Repo())
    assert created == [ev.RepoCreated(name="images", description="pics")]
    s = state_after(*created)
    assert s.exists and s.description == "pics"
    assert repo.create_repo("images", "pics", update=True)(s) == []  # nothing to change
    changed = repo.create_repo("images", "new", update=True)(s)
    assert changed == [ev.RepoDescriptionSet(description="new")]
    s = state_after(*created, *changed)
    assert repo.delete_repo("images", force=False)(s) == [ev.RepoDeleted(forced=False)]
    assert not state_after(*created, *changed, ev.RepoDeleted()).exists


def test_refusals() -> None:
    s = state_after(ev.RepoCreated(name="images"))
    with pytest.raises(AlreadyExists, match="images already exists"):
        repo.create_repo("images", "", update=False)(s)
    with pytest.raises(NotFound, match="repo gone not found"):
        repo.delete_repo("gone", force=True)(repo.Repo())
    for bad in ("a b", "a.b", "a/b", "é", ""):
        with pytest.raises(InvalidArgument) as info:
            repo.create_repo(bad, "", update=False)
        assert repr(bad) in str(info.value)
    # Update of a repo that does not exist creates it (Pachyderm's update-repo).
    assert repo.create_repo("fresh", "d", update=True)(repo.Repo()) == [
        ev.RepoCreated(name="fresh", description="d")
    ]
