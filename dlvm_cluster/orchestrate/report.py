"""What `dlvm status` shows of a cluster: nodes, their reachability and their machines' state
as the provider sees it, the hourly price where known, and recent jobs."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from dlvm_cluster import providers
from dlvm_cluster.errors import DlvmError, StateError
from dlvm_cluster.orchestrate.jobs import JobRecord, refresh_states
from dlvm_cluster.orchestrate.nodes import NodeStatus
from dlvm_cluster.orchestrate.nodes import status as node_status
from dlvm_cluster.orchestrate.power import stop_marks
from dlvm_cluster.orchestrate.records import applied_spec, cluster_kind
from dlvm_cluster.providers.base import NodeState, StopMark
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


def node_state(provider_state: NodeState | None, reachable: bool) -> str:
    """One word per node: the provider's state when the machine is not running, else whether
    SSH reaches it (a running machine whose sshd does not answer is unreachable)."""
    if provider_state not in (None, NodeState.RUNNING):
        return str(provider_state)
    return str(NodeState.RUNNING) if reachable else UNREACHABLE


def _stop_fields(mark: StopMark | None) -> tuple[str, str]:
    """(by, at) of a stopped node's mark; empty strings when none."""
    if mark is None:
        return "", ""
    return mark.by, time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(mark.at))


def stopped_why(by: str, at: str) -> str:
    """`autostop at 12:03`: a stopped node's reason, as status shows it."""
    return f"{by} at {at[11:16]}" if at else by


def report(state: ClusterState) -> ClusterReport:
    inventory, rows_seen = node_status(state)
    provider = providers.for_kind(cluster_kind(state) or providers.DEFAULT_KIND)
    problem = None
    try:
        states = provider.node_states(state, inventory)
    except DlvmError as exc:  # no credentials or no API: SSH reachability still shows
        states, problem = {}, str(exc)
    nodes = {node.name: node for node in inventory.nodes}
    stopped = any(value == NodeState.STOPPED for value in states.values())
    marks = stop_marks(state, inventory) if stopped else {}
    rows = []
    for row in rows_seen:
        mark = marks.get(row.name) if states.get(row.name) == NodeState.STOPPED else None
        by, at = _stop_fields(mark)
        rows.append(
            replace(
                row,
                state=node_state(states.get(row.name), row.reachable),
                provider_id=provider.provider_id(state, nodes[row.name]),
                stopped_by=by,
                stopped_at=at,
            )
        )
    try:
        price = provider.status_price(applied_spec(state).spec, len(inventory.nodes))
    except StateError:
        price = None
    jobs = tuple(refresh_states(state)[-RECENT_JOBS:])
    return ClusterReport(state.name, tuple(rows), jobs, price, provider_problem=problem)
