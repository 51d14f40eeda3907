"""What `dlvm status` shows of a cluster: nodes and their reachability, the provider's view of
its machines (gcp), the hourly price where known, and recent jobs."""

from __future__ import annotations

from dataclasses import dataclass, replace

from dlvm_cluster.errors import DlvmError
from dlvm_cluster.orchestrate.gcp_report import gcp_status, gcp_status_price, is_gcp_cluster
from dlvm_cluster.orchestrate.jobs import JobRecord, refresh_states
from dlvm_cluster.orchestrate.nodes import NodeStatus
from dlvm_cluster.orchestrate.nodes import status as node_status
from dlvm_cluster.state import ClusterState

RECENT_JOBS = 10


@dataclass(frozen=True)
class ClusterReport:
    cluster: str
    nodes: tuple[NodeStatus, ...]
    jobs: tuple[JobRecord, ...]
    price: str | None

    @property
    def has_vm_states(self) -> bool:
        return any(node.vm for node in self.nodes)


def report(state: ClusterState) -> ClusterReport:
    inventory, rows = node_status(state)
    price = None
    if is_gcp_cluster(state):
        try:
            vms = gcp_status(state, inventory)
        except DlvmError as exc:  # no credentials or no API: SSH reachability still shows
            vms = {node.name: f"unknown: {exc}" for node in inventory.nodes}
        rows = [replace(row, vm=vms.get(row.name, "")) for row in rows]
        price = gcp_status_price(state, inventory)
    jobs = tuple(refresh_states(state)[-RECENT_JOBS:])
    return ClusterReport(state.name, tuple(rows), jobs, price)
