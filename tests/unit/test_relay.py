"""A pool that goes through the cluster's agent (remote/relay.py), against a real agent whose
only node cannot be reached: which batches the agent may take, what comes back when it
cannot reach a node, what it refuses, and that secret values never go through it. A no-op
`up` that opens no connection of its own on real nodes: tests/cluster/test_agent_e2e.py."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from harness import start_agent, unreachable_cluster

from dlvm_cluster.errors import RemoteError
from dlvm_cluster.inventory import Inventory, Node
from dlvm_cluster.orchestrate.cluster.files import install_secrets
from dlvm_cluster.orchestrate.cluster.records import load_inventory, open_pool
from dlvm_cluster.remote import agent_client, agent_process
from dlvm_cluster.remote.relay import AgentRelay
from dlvm_cluster.state import ClusterState


@pytest.fixture
def state(tmp_path: Path) -> ClusterState:
    return unreachable_cluster(ClusterState(name="rel", root=tmp_path / "rel"))


@pytest.fixture
def agent(state: ClusterState, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    monkeypatch.setenv("DLVM_AGENT_IDLE", "30")
    monkeypatch.delenv("DLVM_NO_AGENT", raising=False)
    pid = start_agent(state)
    try:
        yield pid
    finally:
        agent_process.stop(state.root)


def _inventory(state: ClusterState) -> Inventory:
    inventory = load_inventory(state)
    assert inventory is not None
    return inventory


def test_the_relay_serves_only_the_recorded_nodes(state: ClusterState) -> None:
    relay = AgentRelay(state)
    inventory = _inventory(state)
    digest = agent_client.inventory_digest(state.inventory_path.read_bytes())
    assert relay.serving(inventory, inventory.nodes) == digest
    # a node replaced since (another address): the agent's connection is to the old one
    moved = dataclasses.replace(inventory.nodes[0], ip="127.0.0.2")
    assert relay.serving(inventory, [moved]) == ""
    # the pool's nodes are not those the file holds
    assert relay.serving(dataclasses.replace(inventory, nodes=(moved,)), [moved]) == ""
    state.inventory_path.write_text("{")
    assert relay.serving(inventory, inventory.nodes) == ""


def test_without_an_agent_nothing_is_relayed(state: ClusterState) -> None:
    inventory = _inventory(state)
    relay = AgentRelay(state)
    assert relay.run(inventory, inventory.nodes, ["true"]) is None
    assert relay.answering(inventory, inventory.nodes, 1.0) is None
    assert relay.batches == 0


def test_a_node_the_agent_cannot_reach_is_connected_to_and_reported(
    state: ClusterState, agent: int
) -> None:
    inventory = _inventory(state)
    relay = AgentRelay(state)
    assert relay.answering(inventory, inventory.nodes, 1.0) == set()
    assert relay.batches == 1
    failed = relay.run_everywhere(inventory, inventory.nodes, "cat", b"data")
    assert failed is not None and len(failed) == 1
    assert failed[0].startswith("node-0: unreachable")
    # The pool then tries the node itself, and says why it could not reach it.
    with open_pool(state, inventory, relay=True) as pool:
        assert pool.relay is not None
        errors = pool.connect(inventory.nodes, timeout=1.0)
    assert set(errors) == {"node-0"}


@pytest.mark.parametrize("stdin", [5, "not base64!", ["x"]])
def test_a_request_with_a_malformed_stdin_is_refused(
    state: ClusterState, agent: int, stdin: object
) -> None:
    digest = agent_client.inventory_digest(state.inventory_path.read_bytes())
    answer = agent_client.request(
        state.root,
        {
            "op": "run",
            "inventory": digest,
            "nodes": ["node-0"],
            "commands": ["true"],
            "stdin": stdin,
        },
    )
    assert answer == {"refused": "malformed request"}


class _Recorder(AgentRelay):
    """A relay that takes every batch, recording what it was given."""

    def __init__(self, state: ClusterState) -> None:
        super().__init__(state)
        self.given: list[bytes] = []

    def run_everywhere(
        self, inventory: Inventory, nodes: Sequence[Node], script: str, stdin: bytes
    ) -> list[str] | None:
        self.given.append(stdin)
        return []


def test_secret_values_never_go_through_the_agent(state: ClusterState) -> None:
    """The secrets file goes over the pool's own connection (here: none can be made), while
    an empty one (no secrets) goes through the agent."""
    inventory = _inventory(state)
    with open_pool(state, inventory) as pool:
        pool.relay = relay = _Recorder(state)
        with pytest.raises(RemoteError, match="cannot write the secrets file"):
            install_secrets(pool, state, inventory.nodes, {"TOKEN": "value-of-the-secret"})
        assert relay.given == []
        install_secrets(pool, state, inventory.nodes, {})
        assert relay.given == [b"\n"]
    assert json.loads(state.secret_names_path.read_text()) == []
