"""What `dlvm status` shows of a cluster: nodes, their reachability and their machines' state
as the provider sees it, how the machines are provided and the hourly price where known, and
recent jobs."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from dlvm_cluster.errors import DlvmError
from dlvm_cluster.inventory import Inventory
from dlvm_cluster.orchestrate.cluster import autostop
from dlvm_cluster.orchestrate.cluster.context import Cluster
from dlvm_cluster.orchestrate.cluster.lifecycle import down
from dlvm_cluster.orchestrate.cluster.power import (
    node_hours,
    record_usage,
    stop_marks,
    taken_down_mark,
)
from dlvm_cluster.orchestrate.jobs.store import JobRecord
from dlvm_cluster.orchestrate.jobs.verbs import refresh_states
from dlvm_cluster.orchestrate.nodes.commands import NodeStatus
from dlvm_cluster.orchestrate.nodes.commands import status as node_status
from dlvm_cluster.progress import SilentProgress
from dlvm_cluster.providers.base import CapacityFacts, NodeState, StopMark

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
    autostop: str | None = None  # the settings in force (None: off)
    autostop_problem: str | None = None  # "autostop is not active: ..." when it should run
    stopped_by: str | None = None  # every node stopped: "autostop at 12:03", "user at ..."
    taken_down: str | None = None  # autostop's `down` was finished now: "autostop at 12:03"
    usage: str | None = None  # node-hours so far, and the spend where prices are known


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


def cluster_stopped_by(rows: Sequence[NodeStatus]) -> str | None:
    """Why the whole cluster is stopped, when every node is and for the same reason: `autostop
    at 12:03`, at the first node's stop (nodes that stop themselves do so seconds apart, maybe
    across a minute). None while a node runs, or when the reasons differ."""
    if not rows or any(row.state != NodeState.STOPPED for row in rows):
        return None
    reasons = {row.stopped_by for row in rows}
    if len(reasons) != 1 or not (by := reasons.pop()):
        return None
    times = sorted(row.stopped_at for row in rows if row.stopped_at)
    return stopped_why(by, times[0] if times else "")


def report(cluster: Cluster) -> ClusterReport:
    """The cluster as it is; a cluster whose nodes powered off for autostop's `down` is taken
    down first (the nodes could not delete themselves), and the report says so."""
    state = cluster.state
    inventory = cluster.inventory
    mark = taken_down_mark(cluster, inventory) if inventory is not None else None
    if mark is not None:
        down(cluster, SilentProgress())
        by, at = _stop_fields(mark)
        return ClusterReport(state.name, (), (), None, taken_down=stopped_why(by, at))
    inventory, rows_seen = node_status(cluster)
    provider = cluster.provider
    problem = None
    try:
        states = provider.node_states(inventory)
    except DlvmError as exc:  # no credentials or no API: SSH reachability still shows
        states, problem = {}, str(exc)
    nodes = {node.name: node for node in inventory.nodes}
    stopped = any(value == NodeState.STOPPED for value in states.values())
    marks = stop_marks(cluster, inventory) if stopped else {}
    rows = []
    for row in rows_seen:
        mark = marks.get(row.name) if states.get(row.name) == NodeState.STOPPED else None
        by, at = _stop_fields(mark)
        rows.append(
            replace(
                row,
                state=node_state(states.get(row.name), row.reachable),
                provider_id=provider.provider_id(nodes[row.name]),
                stopped_by=by,
                stopped_at=at,
            )
        )
    applied = cluster.applied
    spec = applied.spec if applied is not None else None
    if spec is None:
        price, capacity = None, None
    else:
        price = provider.status_price(len(inventory.nodes))
        capacity = provider.capacity()
    jobs = tuple(refresh_states(cluster)[-RECENT_JOBS:])
    guard, guard_problem = _autostop(cluster, inventory, rows)
    # Machines dlvm only borrows (ssh) are billed, if at all, by their owner.
    usage = usage_line(cluster, inventory) if provider.owns_machines else None
    return ClusterReport(
        state.name,
        tuple(rows),
        jobs,
        price,
        provider_problem=problem,
        capacity=capacity,
        autostop=guard,
        autostop_problem=guard_problem,
        stopped_by=cluster_stopped_by(rows),
        usage=usage,
    )


def usage_line(cluster: Cluster, inventory: Inventory) -> str:
    """`spend so far: $12.30 (10.0 node-hours running, 2.0 stopped); stopped: $0.03/h`:
    node-hours from the state dir's record, priced where the provider knows prices."""
    running, stopped = node_hours(record_usage(cluster, inventory))
    hours = f"{running:.1f} node-hours running, {stopped:.1f} stopped"
    applied = cluster.applied
    rates = cluster.provider.hourly_rates() if applied is not None else None
    if rates is None:
        return f"usage so far: {hours} (no hourly prices for this cluster)"
    spend = running * rates.running + stopped * rates.stopped
    disks = rates.stopped * len(inventory.nodes)
    return f"spend so far: ${spend:.2f} ({hours}); stopped, the disks cost ${disks:.2f}/h"


def _autostop(
    cluster: Cluster, inventory: Inventory, rows: list[NodeStatus]
) -> tuple[str | None, str | None]:
    """The autostop settings in force, and why the head's watcher is not active when it
    should be (the head runs and answers, yet no fresh heartbeat)."""
    applied = cluster.applied
    if applied is None:
        return None, None
    in_force = autostop.settings_in_force(cluster.state, applied.spec)
    if in_force is None:
        return None, None
    settings = autostop.describe(in_force)
    head = next((row for row in rows if row.name == inventory.head.name), None)
    if head is None or not head.reachable:
        return settings, None
    watcher = autostop.watcher_state(cluster.pool(), inventory.head, cluster.name)
    if watcher.active:
        return f"{settings} (idle for {watcher.idle_for:.0f}s)", None
    return settings, f"autostop is not active: {watcher.problem}"
