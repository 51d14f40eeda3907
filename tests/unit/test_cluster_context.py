"""The `Cluster` of one command (orchestrate/cluster/context.py): the provider built once, one
SSH pool shared by every stage, records read once and saved through it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from harness import unreachable_cluster

from dlvm_cluster import providers
from dlvm_cluster.inventory import Inventory
from dlvm_cluster.orchestrate.cluster import records
from dlvm_cluster.orchestrate.cluster.context import Cluster
from dlvm_cluster.orchestrate.nodes.commands import status
from dlvm_cluster.remote import pool as pool_module
from dlvm_cluster.state import ClusterState


@pytest.fixture
def state(tmp_path: Path) -> ClusterState:
    return unreachable_cluster(ClusterState("ctx", tmp_path / "ctx"))


def test_one_command_opens_one_pool_whatever_its_stages_ask(
    state: ClusterState, monkeypatch: pytest.MonkeyPatch
) -> None:
    pools: list[Any] = []
    real = pool_module.SshPool.__init__

    def counted(self: Any, *args: Any, **kwargs: Any) -> None:
        pools.append(self)
        real(self, *args, **kwargs)

    monkeypatch.setattr(pool_module.SshPool, "__init__", counted)
    with Cluster(state) as cluster:
        inventory = cluster.require_inventory()
        assert cluster.reach().unreachable(inventory) == ["node-0"]  # what a provider asks
        _, rows = status(cluster)  # what status asks
        assert [row.reachable for row in rows] == [False]
        assert cluster.pool() is cluster.pool()
    assert len(pools) == 1


def test_the_provider_is_built_once(state: ClusterState, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []
    real = providers.for_kind

    def counted(kind: str, *bound: Any) -> Any:
        built.append(kind)
        return real(kind, *bound)

    monkeypatch.setattr(providers, "for_kind", counted)
    cluster = Cluster(state)
    assert cluster.provider is cluster.provider
    assert built == [providers.DEFAULT_KIND]


def test_records_are_read_once_and_saved_through_it(
    state: ClusterState, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[ClusterState] = []
    real = records.load_inventory

    def counted(read_state: ClusterState) -> Inventory | None:
        reads.append(read_state)
        return real(read_state)

    monkeypatch.setattr(records, "load_inventory", counted)
    cluster = Cluster(state)
    first = cluster.require_inventory()
    assert cluster.inventory == first and len(reads) == 1
    smaller = Inventory(first.cluster, ())
    cluster.save_inventory(smaller)
    assert cluster.inventory == smaller and len(reads) == 1  # what was saved, not re-read
    assert records.load_inventory(state) == smaller  # and on disk
    cluster.forget_records()  # another process may have written it: read again
    assert cluster.inventory == smaller and len(reads) == 3


def test_a_replaced_node_gets_a_new_connection(state: ClusterState) -> None:
    """The pool keys connections by node name; a node with a new address or key is another
    machine, so the connection made to the old one is not reused."""
    with Cluster(state) as cluster:
        pool = cluster.pool()
        node = cluster.require_inventory().nodes[0]

        class Open:
            alive = True

            def __init__(self, node: Any) -> None:
                self.node = node
                self.closed = False

            def close(self) -> None:
                self.closed = True

        old = Open(node)
        pool._connections[node.name] = old  # type: ignore[assignment]
        assert pool.get(node) is old  # type: ignore[comparison-overlap]
        moved = node.__class__(**{**node.__dict__, "port": node.port + 1})
        with pytest.raises(Exception):  # noqa: B017 - nothing answers on the new port either
            pool.get(moved, timeout=1)
        assert old.closed
