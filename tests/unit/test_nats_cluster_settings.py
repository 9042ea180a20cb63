"""PACH_NATS_NODES: the launcher's settings, the nodes' configs and the
data dir's node count (no process started here; the running cluster is
tests/integration/test_multinode.py)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from libs.errors import FailedPrecondition, InvalidArgument
from programs.cluster import natscluster
from programs.cluster.settings import ClusterSettings


def test_one_node_by_default_and_nothing_changes() -> None:
    s = ClusterSettings.from_env({})
    assert s.nats_nodes == 1 and s.stream_replicas == 1
    assert s.count("pfs") == 1


def test_three_nodes_mean_three_copies_and_two_replicas_unless_told() -> None:
    s = ClusterSettings.from_env({"PACH_NATS_NODES": "3", "PACH_REPLICAS": "pps=3"})
    assert s.stream_replicas == 3
    assert s.count("pfs") == 2 and s.count("admin") == 2 and s.count("pps") == 3
    s = ClusterSettings.from_env({"PACH_NATS_NODES": "5", "PACH_EVENTS_REPLICAS": "5"})
    assert s.stream_replicas == 5


@pytest.mark.parametrize("raw", ["2", "0", "4", "-1", "three", "7"])
def test_node_counts_without_a_useful_majority_are_refused(raw: str) -> None:
    with pytest.raises(InvalidArgument, match="PACH_NATS_NODES"):
        ClusterSettings.from_env({"PACH_NATS_NODES": raw})


def test_more_copies_than_nodes_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="PACH_EVENTS_REPLICAS"):
        ClusterSettings.from_env({"PACH_NATS_NODES": "3", "PACH_EVENTS_REPLICAS": "5"})
    with pytest.raises(InvalidArgument, match="PACH_EVENTS_REPLICAS"):
        ClusterSettings.from_env({"PACH_EVENTS_REPLICAS": "3"})


def test_nodes_route_to_each_other_with_a_private_route_credential(tmp_path: Path) -> None:
    servers = natscluster.plan(tmp_path, 3, "authorization { }\n")
    assert len({s.port for s in servers}) == 3
    assert len({s.store_dir for s in servers}) == 3
    password = servers[0].route_password
    assert password and all(s.route_password == password for s in servers)
    route_file = tmp_path / natscluster.ROUTE_FILE
    assert stat.S_IMODE(route_file.stat().st_mode) == 0o600
    for i, s in enumerate(servers):
        conf = s._config()
        assert f"server_name: nats-{i}" in conf
        assert f"listen: 127.0.0.1:{s.cluster_port}" in conf
        assert "authorization {" in conf  # the users' block on every node
        assert f'password: "{password}"' in conf  # routes must authenticate
        others = [o.cluster_port for o in servers if o is not s]
        assert all(f"@127.0.0.1:{p}" in conf for p in others)
        assert f"@127.0.0.1:{s.cluster_port}" not in conf
    # The secret is kept across restarts.
    assert natscluster.plan(tmp_path, 3, "")[0].route_password == password
    # One node: no cluster block, the store where it always was.
    (single,) = natscluster.plan(tmp_path / "one", 1, "")
    assert "cluster {" not in single._config() and single.store_dir == tmp_path / "one" / "nats"


def test_a_data_dir_keeps_its_node_count(tmp_path: Path) -> None:
    natscluster.check_node_count(tmp_path, 3)
    natscluster.check_node_count(tmp_path, 3)
    with pytest.raises(FailedPrecondition, match="PACH_NATS_NODES=3"):
        natscluster.check_node_count(tmp_path, 1)
    old = tmp_path / "old"
    (old / "nats" / "jetstream").mkdir(parents=True)  # a one-node store from before
    with pytest.raises(FailedPrecondition, match="PACH_NATS_NODES=1"):
        natscluster.check_node_count(old, 3)
    natscluster.check_node_count(old, 1)
