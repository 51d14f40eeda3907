"""A flex-start gang: the nodes of a multi-node flex-start cluster, created all at once.

Each flex-start VM created on its own waits in Dynamic Workload Scheduler's queue alone: those
that get capacity start running (and billing, their run time counting) while the others wait,
and if the wait ends short every one of them was paid for nothing. A resize request of a
managed instance group asks for all of them at once: the group creates every VM when there is
capacity for all, or none.

Terraform makes the group (an instance template, no VMs); `fill_gang` then asks for the
missing nodes with one resize request naming each VM as dlvm names it (`<cluster>-node-K`,
so that every other part of dlvm finds them as it finds any node), with the run duration
(nodes.max_run_hours), and waits for it until `up`'s wait passes: then, or on Ctrl-C, the
request is cancelled and nothing was created. google_compute_resize_request takes no VM names
(the API's `instances` field), which is why dlvm makes the request through the API.

Google's client library is imported only inside the functions that call the API.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from dlvm_cluster.errors import ProvisionError
from dlvm_cluster.progress import Progress
from dlvm_cluster.providers.gcp.credentials import REQUEST_TIMEOUT, ComputeClients, call_api
from dlvm_cluster.providers.gcp.failover import classify_operation_error
from dlvm_cluster.providers.gcp.tfvars import instance_name

POLL_S = 20.0
NOTE_EVERY_S = 60.0
# Resize request states (InstanceGroupManagerResizeRequest.state).
DONE = "SUCCEEDED"
ENDED = ("FAILED", "CANCELLED")


class GangNotFilled(ProvisionError):
    """The gang's request ended without its VMs; `capacity`: for want of capacity in the zone
    (the wait passed, or Google reported a stockout), which another zone may have."""

    def __init__(self, message: str, *, hint: str, capacity: bool) -> None:
        super().__init__(message, hint=hint)
        self.capacity = capacity


def request_name(names: Sequence[str], now: float) -> str:
    """A resize request's name: the first node it adds and when (unique within the group)."""
    return f"dlvm-{names[0]}-{int(now)}"


def members(clients: ComputeClients, project: str, zone: str, group: str) -> set[str]:
    """The names of the VMs the group holds (being created or running)."""
    listed = call_api(
        f"the VMs of group {group}",
        project,
        lambda: list(
            clients.group_managers.list_managed_instances(
                project=project,
                zone=zone,
                instance_group_manager=group,
                timeout=REQUEST_TIMEOUT,
            )
        ),
    )
    return {str(item.name) or str(item.instance).rsplit("/", 1)[-1] for item in listed}


def fill_gang(
    clients: ComputeClients,
    project: str,
    zone: str,
    group: str,
    cluster: str,
    nodes: Sequence[str],
    *,
    run_hours: int,
    wait_s: float,
    progress: Progress,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """Ask for the nodes the group lacks, all at once, and wait until they exist; returns the
    nodes it asked for ([] when none was missing)."""
    held = members(clients, project, zone, group)
    wanted = {instance_name(cluster, node) for node in nodes}
    extra = sorted(held - wanted)
    if extra:  # nodes the cluster no longer has (a smaller nodes.count)
        progress.note(f"deleting {', '.join(extra)}: the cluster has fewer nodes now")
        remove_members(clients, project, zone, group, extra, clock=clock, sleep=sleep)
    missing = [node for node in nodes if instance_name(cluster, node) not in held]
    if not missing:
        return []
    name = request_name(missing, clock())
    _insert(clients, project, zone, group, name, cluster, missing, run_hours)
    progress.note(
        f"flex-start: asking Dynamic Workload Scheduler for {len(missing)} node(s) at once in "
        f"{zone} ({', '.join(missing)}); nothing runs or bills until all have capacity"
    )
    begun = clock()
    next_note = begun + NOTE_EVERY_S
    try:
        while True:
            state, errors, stockout = _state(clients, project, zone, group, name)
            if state == DONE:
                return missing
            if state in ENDED:
                raise GangNotFilled(
                    f"the request for {len(missing)} flex-start node(s) in {zone} ended "
                    f"{state}: {errors or 'no reason given'}",
                    hint="run `dlvm up` again later, or put other zones in provider.zones",
                    capacity=stockout,
                )
            now = clock()
            if now - begun >= wait_s:
                raise GangNotFilled(
                    f"no capacity for all {len(missing)} flex-start node(s) in {zone} within "
                    f"{_minutes(wait_s)}: the request was cancelled, no VM was created",
                    hint="run `dlvm up` again with a longer --wait, later, or with other "
                    "zones in provider.zones",
                    capacity=True,
                )
            if now >= next_note:
                next_note = now + NOTE_EVERY_S
                progress.note(
                    f"waiting for capacity in zone {zone}, {_minutes(now - begun)}: "
                    f"{len(missing)} node(s) queued together by Dynamic Workload Scheduler"
                )
            sleep(POLL_S)
    except BaseException:
        # A deadline, Ctrl-C or a failure: the request must not create VMs nobody waits for.
        _withdraw(clients, project, zone, group, name, progress)
        raise


def remove_members(
    clients: ComputeClients,
    project: str,
    zone: str,
    group: str,
    vm_names: Sequence[str],
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    limit_s: float = 600.0,
) -> None:
    """Delete these VMs from the group (and so from the project), and wait until the group
    no longer holds them."""
    from google.cloud import compute_v1

    urls = [f"zones/{zone}/instances/{name}" for name in vm_names]
    call_api(
        f"deleting VMs of group {group}",
        project,
        lambda: clients.group_managers.delete_instances_unary(
            project=project,
            zone=zone,
            instance_group_manager=group,
            instance_group_managers_delete_instances_request_resource=(
                compute_v1.InstanceGroupManagersDeleteInstancesRequest(instances=urls)
            ),
            timeout=REQUEST_TIMEOUT,
        ),
    )
    begun = clock()
    while set(vm_names) & members(clients, project, zone, group):
        if clock() - begun > limit_s:
            raise ProvisionError(
                f"{', '.join(vm_names)} are still being deleted after {_minutes(limit_s)}",
                hint="run the command again in a few minutes",
            )
        sleep(POLL_S)


def _insert(
    clients: ComputeClients,
    project: str,
    zone: str,
    group: str,
    name: str,
    cluster: str,
    missing: Sequence[str],
    run_hours: int,
) -> None:
    from google.cloud import compute_v1

    request = compute_v1.InstanceGroupManagerResizeRequest(
        name=name,
        description=f"Nodes {', '.join(missing)} of dlvm cluster {cluster}.",
        instances=[compute_v1.PerInstanceConfig(name=instance_name(cluster, n)) for n in missing],
        requested_run_duration=compute_v1.Duration(seconds=run_hours * 3600),
    )
    call_api(
        f"a resize request of group {group}",
        project,
        lambda: clients.resize_requests.insert_unary(
            project=project,
            zone=zone,
            instance_group_manager=group,
            instance_group_manager_resize_request_resource=request,
            timeout=REQUEST_TIMEOUT,
        ),
    )


def _state(
    clients: ComputeClients, project: str, zone: str, group: str, name: str
) -> tuple[str, str, bool]:
    """The request's state, when it failed Google's reasons and whether they say the zone had
    no capacity; ("", "", False) while it is not readable yet (just inserted)."""
    from google.api_core import exceptions

    try:
        found: Any = call_api(
            f"resize request {name}",
            project,
            lambda: clients.resize_requests.get(
                project=project,
                zone=zone,
                instance_group_manager=group,
                resize_request=name,
                timeout=REQUEST_TIMEOUT,
            ),
        )
    except exceptions.NotFound:
        return "", "", False
    errors = "; ".join(
        str(error.message)[:200] for error in found.status.error.errors if error.message
    )
    decision = classify_operation_error(found.status)
    return str(found.state), errors, decision is not None and decision.try_next_zone


def _withdraw(
    clients: ComputeClients, project: str, zone: str, group: str, name: str, progress: Progress
) -> None:
    """Cancel the request (a request that ended cannot be, which is fine) and delete it."""
    progress.note(f"cancelling the request for capacity ({name})")
    for verb in ("cancel_unary", "delete_unary"):
        try:
            getattr(clients.resize_requests, verb)(
                project=project,
                zone=zone,
                instance_group_manager=group,
                resize_request=name,
                timeout=REQUEST_TIMEOUT,
            )
        except Exception:  # best effort: the group is deleted with the cluster all the same
            continue


def gang_outputs(
    clients: ComputeClients, project: str, zone: str, cluster: str, names: Sequence[str], user: str
) -> dict[str, Any]:
    """The module's `nodes` output, as Terraform gives it for VMs made one per node, for the
    gang's VMs (which Terraform does not hold): read from instances.get."""

    def get(vm_name: str) -> Any:
        return call_api(
            f"VM {vm_name}",
            project,
            lambda: clients.instances.get(
                project=project, zone=zone, instance=vm_name, timeout=REQUEST_TIMEOUT
            ),
        )

    nodes: dict[str, Any] = {}
    for rank, node in enumerate(names):
        vm_name = instance_name(cluster, node)
        vm = get(vm_name)
        nic = vm.network_interfaces[0]
        external = str(nic.access_configs[0].nat_i_p) if nic.access_configs else ""
        nodes[node] = {
            "rank": rank,
            "ip": external or str(nic.network_i_p),
            "internal_ip": str(nic.network_i_p),
            "port": 22,
            "user": user,
            "zone": zone,
            "instance": vm_name,
            "host_key": "",
        }
    return nodes


def _minutes(seconds: float) -> str:
    minutes = max(0, round(seconds / 60))
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"
