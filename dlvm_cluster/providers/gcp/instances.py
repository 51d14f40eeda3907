"""Instance states for `status` and `up`: what Compute Engine says of each node, preemption
included, and how `up` brings a node that is down back.

A preempted Spot VM shows as TERMINATED (termination action STOP) or disappears (DELETE, dlvm's
default). Either way the zone keeps a `compute.instances.preempted` operation naming it, which
tells a preemption from a user's stop or delete.

A VM that is stopped (by its user, or by host maintenance when automatic restart is off, as
compact placement sets it) or suspended keeps its boot disk and host keys: `up` starts or
resumes it (instances.start, instances.resume) instead of replacing it. Only a preempted or
missing VM, or one whose start fails, is recreated.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from dlvm_cluster.errors import ProvisionError
from dlvm_cluster.providers.base import NodeState
from dlvm_cluster.providers.gcp.credentials import REQUEST_TIMEOUT, ComputeClients, call_api
from dlvm_cluster.providers.gcp.failover import classify_operation_error
from dlvm_cluster.providers.gcp.hostkeys import NodeRef
from dlvm_cluster.providers.gcp.tfvars import instance_address

PREEMPTED_OPERATION = "compute.instances.preempted"
MISSING = "MISSING"
_STOPPED = {"TERMINATED", "STOPPED", "STOPPING"}
_SUSPENDED = {"SUSPENDED", "SUSPENDING"}
_SETTLING = {"STOPPING", "SUSPENDING"}
_DOWN = _STOPPED | _SUSPENDED | {MISSING}
# zoneOperations.wait returns when the operation is done or after about two minutes.
OPERATION_WAITS = 10
SETTLE_ATTEMPTS = 30
SETTLE_INTERVAL = 10.0


class Recovery(StrEnum):
    """What `up` does for a node, from its VM's state."""

    NONE = "none"  # running, or on its way there
    START = "start"  # stopped: instances.start
    RESUME = "resume"  # suspended: instances.resume
    REPLACE = "replace"  # preempted: `apply -replace`
    CREATE = "create"  # missing: a plain apply makes it


@dataclass(frozen=True)
class InstanceState:
    """One node as the API sees it."""

    name: str
    status: str  # RUNNING, PROVISIONING, STAGING, TERMINATED, ... or MISSING (no such VM)
    preempted: bool
    spot: bool
    instance_id: str = ""  # changes when the VM is recreated

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
    def recovery(self) -> Recovery:
        """How `up` brings this node back: a stopped or suspended VM keeps its disk and host
        keys, so it is started or resumed; a preempted one is recreated."""
        if self.status == MISSING:
            return Recovery.CREATE
        if self.status not in _DOWN:
            return Recovery.NONE
        if self.preempted:
            return Recovery.REPLACE
        return Recovery.RESUME if self.status in _SUSPENDED else Recovery.START

    @property
    def needs_recreate(self) -> bool:
        """Preempted or missing: `up` recreates it (a plain apply does for a MISSING one)."""
        return self.recovery in (Recovery.REPLACE, Recovery.CREATE)


def instance_states(
    clients: ComputeClients, project: str, nodes: Sequence[NodeRef]
) -> dict[str, InstanceState]:
    """node name -> state; one call per node, plus one per zone that has a node down."""
    from google.api_core import exceptions

    found: dict[str, tuple[str, bool, str, str]] = {}
    for node in nodes:
        try:
            vm = _get_instance(clients, project, node)
        except exceptions.NotFound:
            found[node.name] = (MISSING, False, "", "")
            continue
        spot = str(vm.scheduling.provisioning_model) == "SPOT" or bool(vm.scheduling.preemptible)
        found[node.name] = (str(vm.status), spot, str(vm.last_start_timestamp), str(vm.id or ""))
    preemptions: dict[str, dict[str, str]] = {}
    for zone in sorted({n.zone for n in nodes if found[n.name][0] in _DOWN}):
        preemptions[zone] = preempted_instances(clients, project, zone)
    states = {}
    for node in nodes:
        status, spot, started, instance_id = found[node.name]
        when = preemptions.get(node.zone, {}).get(node.instance)
        preempted = status in _DOWN and when is not None and _after(when, started)
        states[node.name] = InstanceState(
            node.name, status, preempted=preempted, spot=spot or preempted, instance_id=instance_id
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


def _zone_operations(
    clients: ComputeClients, project: str, zone: str, operation_type: str
) -> list[Any]:
    """The zone's operations of one type (none for a zone that no longer exists)."""
    from google.api_core import exceptions
    from google.cloud import compute_v1

    request = compute_v1.ListZoneOperationsRequest(
        project=project, zone=zone, filter=f'operationType="{operation_type}"'
    )
    try:
        operations = call_api(
            f"operations in {zone}",
            project,
            lambda: list(clients.zone_operations.list(request=request, timeout=REQUEST_TIMEOUT)),
        )
    except exceptions.NotFound:
        return []
    # The filter is a match, not equality: check the type.
    return [op for op in operations if str(op.operation_type) == operation_type]


def _target_name(operation: Any) -> str:
    """The VM an operation acted on, from its target link."""
    return str(operation.target_link).rsplit("/instances/", 1)[-1]


def preempted_instances(clients: ComputeClients, project: str, zone: str) -> dict[str, str]:
    """VM name -> time of its latest preemption, from the zone's operations."""
    latest: dict[str, str] = {}
    for operation in _zone_operations(clients, project, zone, PREEMPTED_OPERATION):
        name, when = _target_name(operation), str(operation.insert_time)
        if name not in latest or _after(when, latest[name]):
            latest[name] = when
    return latest


DELETE_OPERATION = "delete"


def deletions(clients: ComputeClients, project: str, zone: str) -> dict[str, tuple[str, str]]:
    """VM name -> (who, when) of its latest deletion, from the zone's operations: `user` is
    the account that asked (a node's own service account when autostop took it down)."""
    latest: dict[str, tuple[str, str]] = {}
    for operation in _zone_operations(clients, project, zone, DELETE_OPERATION):
        name, when = _target_name(operation), str(operation.insert_time)
        if name not in latest or _after(when, latest[name][1]):
            latest[name] = (str(operation.user), when)
    return latest


GROUP_DELETE_OPERATION = "compute.instanceGroupManagers.deleteInstances"


def group_deletions(
    clients: ComputeClients, project: str, zone: str, group: str
) -> list[tuple[str, str]]:
    """(who, when) of each deleteInstances on managed instance group `group`: how a flex-start
    gang's node leaves (the VMs' own delete operations are then the group's, not the
    caller's)."""
    return [
        (str(operation.user), str(operation.insert_time))
        for operation in _zone_operations(clients, project, zone, GROUP_DELETE_OPERATION)
        if str(operation.target_link).endswith(f"/instanceGroupManagers/{group}")
    ]


def _after(first: str, second: str) -> bool:
    """Whether RFC 3339 time `first` is at or after `second` (an unknown `second` is earlier)."""
    try:
        return datetime.fromisoformat(first) >= datetime.fromisoformat(second)
    except (ValueError, TypeError):
        return True


def replace_addresses(states: dict[str, InstanceState]) -> list[str]:
    """Terraform addresses to pass as `apply -replace` so `up` recreates the preempted nodes
    (a missing one needs no -replace; a stopped or suspended one is started instead)."""
    return [
        instance_address(name)
        for name, state in sorted(states.items())
        if state.recovery is Recovery.REPLACE
    ]


def instance_id(clients: ComputeClients, project: str, node: NodeRef) -> str:
    """The VM's id now ("" if it is gone): a different id means a different VM."""
    from google.api_core import exceptions

    try:
        return str(_get_instance(clients, project, node).id or "")
    except exceptions.NotFound:
        return ""


@dataclass(frozen=True)
class Woken:
    """How a start or resume went: `failed` says why it did not (empty when it runs)."""

    failed: str = ""
    gone: bool = False  # deleted meanwhile: a plain apply recreates it


_GONE = "it was deleted meanwhile"


def wake(
    clients: ComputeClients,
    project: str,
    node: NodeRef,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> Woken:
    """Start (or resume) a stopped (or suspended) VM and wait for the zone operation.

    A failed operation (no capacity to start it, ...) or a VM that never leaves STOPPING or
    SUSPENDING comes back as the reason; a refused request (permissions, credentials) raises,
    since recreating the VM would only lose its disk.
    """
    from google.api_core import exceptions

    status = _settled_status(clients, project, node, sleep)
    if status in _SETTLING:
        return Woken(f"it stayed {status.lower()} for {SETTLE_ATTEMPTS * SETTLE_INTERVAL:.0f}s")
    if status == MISSING:
        return Woken(_GONE, gone=True)
    if status not in _DOWN:
        return Woken()  # started by someone else meanwhile
    verb = "resume" if status in _SUSPENDED else "start"
    request = getattr(clients.instances, f"{verb}_unary")
    try:
        operation = call_api(
            f"{verb} of {node.instance}",
            project,
            lambda: request(
                project=project, zone=node.zone, instance=node.instance, timeout=REQUEST_TIMEOUT
            ),
        )
    except exceptions.NotFound:
        return Woken(_GONE, gone=True)
    operation = finished(clients, project, node.zone, operation, f"the {verb} of {node.instance}")
    decision = classify_operation_error(operation)
    return Woken() if decision is None else Woken(decision.reason)


def finished(clients: ComputeClients, project: str, zone: str, operation: Any, what: str) -> Any:
    """A zone operation (as a request returned it) once DONE; `what` names it if it never is."""
    from google.cloud import compute_v1

    for _ in range(OPERATION_WAITS):
        if operation.status == compute_v1.Operation.Status.DONE:
            return operation
        operation = _wait_for(clients, project, zone, str(operation.name))
    if operation.status == compute_v1.Operation.Status.DONE:
        return operation
    raise ProvisionError(
        f"{what} did not finish",
        hint="run `dlvm up` again; the operation may still complete on its own",
    )


def _wait_for(clients: ComputeClients, project: str, zone: str, operation: str) -> Any:
    """The zone operation once done, or as it stands when the API's wait returns first."""
    from google.api_core import exceptions

    try:
        return call_api(
            f"operation {operation}",
            project,
            lambda: clients.zone_operations.wait(
                project=project, zone=zone, operation=operation, timeout=REQUEST_TIMEOUT * 5
            ),
        )
    except exceptions.NotFound as exc:  # expired or unknown: its outcome cannot be read
        raise ProvisionError(
            f"operation {operation} in {zone} is no longer known to Compute Engine",
            hint="run `dlvm up` again: it reads the nodes' states anew",
        ) from exc


def _settled_status(
    clients: ComputeClients, project: str, node: NodeRef, sleep: Callable[[float], None]
) -> str:
    """The VM's status once it is no longer stopping or suspending (or the last one seen)."""
    from google.api_core import exceptions

    status = ""
    for attempt in range(SETTLE_ATTEMPTS):
        try:
            status = str(_get_instance(clients, project, node).status)
        except exceptions.NotFound:
            return MISSING
        if status not in _SETTLING:
            return status
        if attempt + 1 < SETTLE_ATTEMPTS:
            sleep(SETTLE_INTERVAL)
    return status


def halt(clients: ComputeClients, project: str, node: NodeRef) -> None:
    """Stop a VM (instances.stop) and wait for the zone operation: its disks are kept and
    only they are billed until it starts again. A VM that is gone or down already is left."""
    from google.api_core import exceptions
    from google.cloud import compute_v1

    try:
        status = str(_get_instance(clients, project, node).status)
    except exceptions.NotFound:
        return
    if status in _DOWN:
        return
    try:
        operation = call_api(
            f"stop of {node.instance}",
            project,
            lambda: clients.instances.stop_unary(
                project=project, zone=node.zone, instance=node.instance, timeout=REQUEST_TIMEOUT
            ),
        )
    except exceptions.NotFound:
        return
    for _ in range(OPERATION_WAITS):
        if operation.status == compute_v1.Operation.Status.DONE:
            break
        operation = _wait_for(clients, project, node.zone, str(operation.name))
    if operation.status != compute_v1.Operation.Status.DONE:
        raise ProvisionError(
            f"the stop of {node.instance} did not finish",
            hint="run `dlvm stop` again; the operation may still complete on its own",
        )
    decision = classify_operation_error(operation)
    if decision is not None:
        raise ProvisionError(
            f"could not stop {node.instance}: {decision.reason}",
            hint="run `dlvm stop` again, or stop the VM from the console",
        )
