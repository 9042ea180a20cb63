"""The downstream reaction's guard against a late delivery, without I/O."""

from __future__ import annotations

from libs.api.events import pfs_pb2 as ev
from services.pfs.app.downstream import _unless_superseded
from services.pfs.domain import commits, repo
from tests.unit.test_pfs_commit_domain import A, B, C, _downstream_over, chain


def test_a_late_commit_finished_opens_nothing_and_an_in_order_one_opens_its_commit() -> None:
    upstream = chain(A, B, C)
    out = _downstream_over(B, C)
    late = commits.downstream_id(A, "out", "master")
    decide = commits.start_commit("out", late, "master", provenance=[("data", A)])
    assert _unless_superseded(decide, upstream, A, "master")(out) == []

    out = _downstream_over(A, B)
    new = commits.downstream_id(C, "out", "master")
    decide = commits.start_commit("out", new, "master", provenance=[("data", C)])
    events = _unless_superseded(decide, upstream, C, "master")(out)
    assert isinstance(events[0], ev.CommitStarted) and events[0].id == new
    assert repo.evolve(out, events[0]).commits[new].provenance == (("data", C),)
