"""What `up` shows while flex-start VMs wait for capacity.

A flex-start VM is created at once, then waits in Dynamic Workload Scheduler's queue, with the
instance status PENDING, until capacity is found; Terraform meanwhile reports the create as
still running, every few seconds. Once a minute of that, the cluster's VMs are read from the
API (one instances.list by the cluster's label) and those PENDING are named: "waiting for
capacity in zone Z, 6m". The wait's limit is Terraform's create timeout (tfvars
create_timeout: `up`'s wait, else DEFAULT_CREATE_TIMEOUT); what happens when it passes, or on
Ctrl-C, is the zone loop's (zone_loop.py).

Google's client library is imported only inside the functions that call the API.
"""

from __future__ import annotations

from dlvm_cluster.progress import Progress, TerraformEvent
from dlvm_cluster.providers.base import Converge
from dlvm_cluster.providers.gcp.config import gcp_config, gcp_nodes
from dlvm_cluster.providers.gcp.credentials import REQUEST_TIMEOUT, ComputeClients, call_api
from dlvm_cluster.providers.gcp.leftovers import label_filter
from dlvm_cluster.providers.gcp.tfvars import RESOURCE_ADDRESS
from dlvm_cluster.providers.terraformed import applied_tfvars
from dlvm_cluster.provision.terraform import EventSink
from dlvm_cluster.state import ClusterState

# Instance.status of a flex-start VM waiting for capacity from Dynamic Workload Scheduler.
WAITING_FOR_CAPACITY = "PENDING"


def capacity_watch(request: Converge, clients: ComputeClients) -> EventSink:
    """Where Terraform's events go during `up`: the progress display, and for flex-start
    nodes also a CapacityWatch."""
    if gcp_nodes(request.spec).provisioning_model != "flex-start":
        return request.progress.terraform
    project = gcp_config(request.spec).project
    return CapacityWatch(clients, project, request.state, request.progress)


class CapacityWatch:
    """Passes Terraform's events on to the progress display and, once per minute that a VM's
    create has lasted (in each zone tried), says which of the cluster's VMs wait for capacity.

    Reading the API is best effort: a failure is never an error of `up`, which Terraform's
    own result decides."""

    def __init__(
        self, clients: ComputeClients, project: str, state: ClusterState, progress: Progress
    ) -> None:
        self.clients = clients
        self.project = project
        self.state = state
        self.progress = progress
        self.shown: dict[str, int] = {}  # zone -> the last whole minute reported

    def __call__(self, event: TerraformEvent) -> None:
        self.progress.terraform(event)
        if event.kind != "progress" or event.action != "create":
            return
        if not event.address.startswith(f"{RESOURCE_ADDRESS}["):
            return
        zone = applied_tfvars(self.state).get("zone")
        minutes = int(event.elapsed // 60)
        if not isinstance(zone, str) or minutes <= self.shown.get(zone, 0):
            return
        self.shown[zone] = minutes
        waiting = self._waiting(zone)
        if waiting:
            self.progress.note(
                f"waiting for capacity in zone {zone}, {minutes}m: {', '.join(waiting)} "
                "queued by Dynamic Workload Scheduler"
            )

    def _waiting(self, zone: str) -> list[str]:
        """The cluster's VMs in `zone` that wait for capacity (none if the API cannot say)."""
        from google.cloud import compute_v1

        request = compute_v1.ListInstancesRequest(
            project=self.project, zone=zone, filter=label_filter(self.state.name)
        )
        try:
            listed = call_api(
                f"the VMs of cluster {self.state.name} in {zone}",
                self.project,
                lambda: list(self.clients.instances.list(request=request, timeout=REQUEST_TIMEOUT)),
            )
        except Exception:  # best effort (see the class): never an error inside Terraform's run
            return []
        return sorted(
            str(dict(vm.labels).get("node") or vm.name)
            for vm in listed
            if str(vm.status) == WAITING_FOR_CAPACITY
        )
