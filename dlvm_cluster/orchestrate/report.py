"""What `dlvm status` shows of a cluster: nodes, their reachability and their machines' state
as the provider sees it, how the machines are provided and the hourly price where known, and
recent jobs."""

from __future__ import annotations

from dataclasses import dataclass, replace

from dlvm_cluster import providers
from dlvm_cluster.errors import DlvmError, StateError
from dlvm_cluster.orchestrate.jobs import JobRecord, refresh_states
from dlvm_cluster.orchestrate.nodes import NodeStatus
from dlvm_cluster.orchestrate.nodes import status as node_status
from dlvm_cluster.orchestrate.records import applied_spec, cluster_kind
from dlvm_cluster.providers.base import CapacityFacts, NodeState
from dlvm_cluster.state import ClusterState

RECENT_JOBS = 10
UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class ClusterReport:
    cluster: str
    nodes: tuple[NodeStatus, ...]
    jobs: tuple[JobRecord, ...]
    price: str | None
    provider_problem: str | None = None  # why the provider could not say how its nodes are
    capacity: CapacityFacts | None = None  # how the machines are provided, where chosen


def node_state(provider_state: NodeState | None, reachable: bool) -> str:
    """One word per node: the provider's state when the machine is not running, else whether
    SSH reaches it (a running machine whose sshd does not answer is unreachable)."""
    if provider_state not in (None, NodeState.RUNNING):
        return str(provider_state)
    return str(NodeState.RUNNING) if reachable else UNREACHABLE


def report(state: ClusterState) -> ClusterReport:
    inventory, rows = node_status(state)
    provider = providers.for_kind(cluster_kind(state) or providers.DEFAULT_KIND)
    problem = None
    try:
        states = provider.node_states(state, inventory)
    except DlvmError as exc:  # no credentials or no API: SSH reachability still shows
        states, problem = {}, str(exc)
    nodes = {node.name: node for node in inventory.nodes}
    rows = [
        replace(
            row,
            state=node_state(states.get(row.name), row.reachable),
            provider_id=provider.provider_id(state, nodes[row.name]),
        )
        for row in rows
    ]
    try:
        spec = applied_spec(state).spec
    except StateError:
        price, capacity = None, None
    else:
        price = provider.status_price(spec, len(inventory.nodes))
        capacity = provider.capacity(spec)
    jobs = tuple(refresh_states(state)[-RECENT_JOBS:])
    return ClusterReport(
        state.name, tuple(rows), jobs, price, provider_problem=problem, capacity=capacity
    )
