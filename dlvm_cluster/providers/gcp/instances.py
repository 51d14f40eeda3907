"""Instance states for `status`: what Compute Engine says of each node, preemption included.

A preempted Spot VM shows as TERMINATED (termination action STOP) or disappears (DELETE, dlvm's
default). Either way the zone keeps a `compute.instances.preempted` operation naming it, which
tells a preemption from a user's stop or delete.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dlvm_cluster.providers.base import NodeState
from dlvm_cluster.providers.gcp.credentials import REQUEST_TIMEOUT, ComputeClients, call_api
from dlvm_cluster.providers.gcp.hostkeys import NodeRef
from dlvm_cluster.providers.gcp.tfvars import instance_address

PREEMPTED_OPERATION = "compute.instances.preempted"
MISSING = "MISSING"
_DOWN = {"TERMINATED", "STOPPED", "STOPPING", "SUSPENDED", "SUSPENDING", MISSING}


@dataclass(frozen=True)
class InstanceState:
    """One node as the API sees it."""

    name: str
    status: str  # RUNNING, PROVISIONING, STAGING, TERMINATED, ... or MISSING (no such VM)
    preempted: bool
    spot: bool

    @property
    def label(self) -> str:
        """The status column: `preempted` where that is why the node is down."""
        return "preempted" if self.preempted else self.status.lower()

    @property
    def node_state(self) -> NodeState:
        """As every provider says it (`status --json`)."""
        if self.preempted:
            return NodeState.PREEMPTED
        if self.status == MISSING:
            return NodeState.MISSING
        return NodeState.STOPPED if self.status in _DOWN else NodeState.RUNNING

    @property
    def needs_recreate(self) -> bool:
        """Down for good: `up` has to recreate it (a plain apply does for a MISSING one)."""
        return self.status in _DOWN


def instance_states(
    clients: ComputeClients, project: str, nodes: Sequence[NodeRef]
) -> dict[str, InstanceState]:
    """node name -> state; one call per node, plus one per zone that has a node down."""
    from google.api_core import exceptions

    found: dict[str, tuple[str, bool, str]] = {}
    for node in nodes:
        try:
            vm = _get_instance(clients, project, node)
        except exceptions.NotFound:
            found[node.name] = (MISSING, False, "")
            continue
        spot = str(vm.scheduling.provisioning_model) == "SPOT" or bool(vm.scheduling.preemptible)
        found[node.name] = (str(vm.status), spot, str(vm.last_start_timestamp))
    preemptions: dict[str, dict[str, str]] = {}
    for zone in sorted({n.zone for n in nodes if found[n.name][0] in _DOWN}):
        preemptions[zone] = preempted_instances(clients, project, zone)
    states = {}
    for node in nodes:
        status, spot, started = found[node.name]
        when = preemptions.get(node.zone, {}).get(node.instance)
        preempted = status in _DOWN and when is not None and _after(when, started)
        states[node.name] = InstanceState(
            node.name, status, preempted=preempted, spot=spot or preempted
        )
    return states


def _get_instance(clients: ComputeClients, project: str, node: NodeRef) -> Any:
    return call_api(
        f"instance {node.instance}",
        project,
        lambda: clients.instances.get(
            project=project, zone=node.zone, instance=node.instance, timeout=REQUEST_TIMEOUT
        ),
    )


def preempted_instances(clients: ComputeClients, project: str, zone: str) -> dict[str, str]:
    """VM name -> time of its latest preemption, from the zone's operations."""
    from google.cloud import compute_v1

    request = compute_v1.ListZoneOperationsRequest(
        project=project, zone=zone, filter=f'operationType="{PREEMPTED_OPERATION}"'
    )
    operations = call_api(
        f"operations in {zone}",
        project,
        lambda: list(clients.zone_operations.list(request=request, timeout=REQUEST_TIMEOUT)),
    )
    latest: dict[str, str] = {}
    for operation in operations:
        # The filter is a match, not equality: check the type and take the name from the link.
        if str(operation.operation_type) != PREEMPTED_OPERATION:
            continue
        name = str(operation.target_link).rsplit("/instances/", 1)[-1]
        when = str(operation.insert_time)
        if name not in latest or _after(when, latest[name]):
            latest[name] = when
    return latest


def _after(first: str, second: str) -> bool:
    """Whether RFC 3339 time `first` is at or after `second` (an unknown `second` is earlier)."""
    try:
        return datetime.fromisoformat(first) >= datetime.fromisoformat(second)
    except (ValueError, TypeError):
        return True


def replace_addresses(states: dict[str, InstanceState]) -> list[str]:
    """Terraform addresses to pass as `apply -replace` so `up` recreates the nodes that are down."""
    return [
        instance_address(name)
        for name, state in sorted(states.items())
        if state.needs_recreate and state.status != MISSING
    ]
