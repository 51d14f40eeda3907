"""What became of a running job's nodes: which are lost (the provider's word for their
machine, or no SSH answer), and which were powered off on purpose (a stop the supervisor
must not undo by replacing the node)."""

from __future__ import annotations

from collections.abc import Sequence

from dlvm_cluster.errors import DlvmError
from dlvm_cluster.inventory import Inventory, Node
from dlvm_cluster.orchestrate.cluster.context import Cluster
from dlvm_cluster.orchestrate.cluster.power import stop_marks
from dlvm_cluster.orchestrate.jobs.store import JobRecord
from dlvm_cluster.providers.base import NodeState


def provider_lost(cluster: Cluster, inventory: Inventory, nodes: Sequence[Node]) -> dict[str, str]:
    """The nodes whose machine the provider says is not running, and its word for it."""
    try:
        states = cluster.provider.node_states(inventory)
    except DlvmError:  # no API now: SSH alone tells
        return {}
    return {
        node.name: str(states[node.name])
        for node in nodes
        if states.get(node.name, NodeState.RUNNING) != NodeState.RUNNING
    }


def lost_nodes(cluster: Cluster, record: JobRecord, seen: dict[str, str]) -> dict[str, str]:
    """The job's nodes that are gone: those `seen` lost while the job ran, else as the
    provider says now; and those not answering SSH. The records are read afresh."""
    cluster.forget_records()
    inventory = cluster.require_inventory()
    nodes = inventory.select(",".join(record.nodes))
    lost = dict(seen) or provider_lost(cluster, inventory, nodes)
    subset = cluster.subset([node.name for node in nodes])
    for name in cluster.reach().unreachable(subset):
        lost.setdefault(name, "unreachable over SSH")
    return lost


def powered_off_on_purpose(cluster: Cluster, record: JobRecord) -> str:
    """Which of the job's nodes was powered off on purpose (`dlvm stop`, autostop,
    max_hours) since the job began, and by what, or "". The mark is read whatever the
    machine's state: a node records it before its processes end, so it is there before the
    provider can call the node stopped (a machine that vanished has none)."""
    cluster.forget_records()
    marks = stop_marks(cluster, cluster.require_inventory())
    for name in record.nodes:
        mark = marks.get(name)
        if mark is not None and mark.at >= record.started:
            return f"{name} was powered off by {mark.by}"
    return ""
