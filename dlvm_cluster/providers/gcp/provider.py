"""The `gcp` provider: Compute Engine VMs made by terraform/gcp, with preflight, zone
failover, host keys from the API, instance states and prices."""

from __future__ import annotations

import functools

from dlvm_cluster.inventory import Inventory, Node
from dlvm_cluster.progress import Progress
from dlvm_cluster.providers import checks
from dlvm_cluster.providers.base import (
    BootReadiness,
    Bound,
    CapacityFacts,
    Check,
    Converge,
    HourlyRates,
    NodeState,
    ProviderPlan,
    Reach,
    StopMark,
)
from dlvm_cluster.providers.gcp import gpu_network, oslogin, storage
from dlvm_cluster.providers.gcp.config import gcp_config
from dlvm_cluster.providers.gcp.converge import provision_gcp, render_gcp, replace_gcp_nodes
from dlvm_cluster.providers.gcp.plan import GcpPlan, gcp_plan
from dlvm_cluster.providers.gcp.power import (
    SELF_DELETE,
    SELF_STOP,
    autostop_deletions,
    start_instances,
    stop_instances,
)
from dlvm_cluster.providers.gcp.pricing import cluster_price, disk_hourly
from dlvm_cluster.providers.gcp.report import (
    capacity_facts,
    cluster_instances,
    gcp_plan_notes,
    price_line,
)
from dlvm_cluster.providers.gcp.tfvars import instance_name
from dlvm_cluster.providers.terraformed import destroy_module, plan_module
from dlvm_cluster.provision.render import RenderedModule


class ComputeEngine(Bound):
    """The `gcp` provider (see the module docstring). Bound to a spec, it resolves it once
    (`resolved`: its gcp keys, node shape, capacity and GPU network) for prices, status and plan
    notes; provisioning resolves the spec of each request."""

    owns_machines = True

    @functools.cached_property
    def resolved(self) -> GcpPlan:
        return gcp_plan(self.spec)

    def check_host(self) -> None:
        return None

    def provision(self, request: Converge) -> tuple[Inventory, bool]:
        return provision_gcp(request)

    def replace_nodes(self, request: Converge, names: list[str]) -> Inventory:
        return replace_gcp_nodes(request, names)

    def plan(self, request: Converge) -> ProviderPlan:
        module = render_gcp(request.spec, request.state)
        return plan_module(module, request.state, request.progress)

    def plan_notes(self) -> list[str]:
        return gcp_plan_notes(self.resolved)

    def render(self) -> RenderedModule:
        return render_gcp(self.spec, self.state)

    def storage_script(self) -> str:
        """gcsfuse mounts kept by systemd units (providers/gcp/storage.py)."""
        return storage.storage_script(self.spec)

    def destroy(self, progress: Progress) -> None:
        destroy_module(self.state, progress)
        if (self.state.terraform_dir / oslogin.RECORD).exists():
            from dlvm_cluster.providers.gcp.credentials import compute_clients

            problem = oslogin.remove_key(compute_clients().rest, self.state)
            if problem:
                progress.note(problem)

    def node_states(self, inventory: Inventory) -> dict[str, NodeState]:
        instances = cluster_instances(self.state, inventory)
        return {name: instance.node_state for name, instance in instances.items()}

    def provider_id(self, node: Node) -> str:
        return instance_name(self.state.name, node.name)

    def status_price(self, nodes: int) -> str | None:
        return price_line(self.resolved, nodes)

    def boot_readiness(self) -> BootReadiness | None:
        return gpu_network.boot_readiness(self.resolved.shape.machine_type)

    def capacity(self) -> CapacityFacts | None:
        return capacity_facts(self.resolved)

    def hourly_rates(self) -> HourlyRates | None:
        estimate = cluster_price(self.resolved, 1)
        disk = disk_hourly(self.resolved)
        if estimate is None or disk is None:
            return None
        return HourlyRates(running=estimate.cluster_hourly + disk, stopped=disk)

    def stop_nodes(self, inventory: Inventory, progress: Progress, *, by: str) -> None:
        stop_instances(self.state, inventory, progress)

    def start_nodes(self, inventory: Inventory, progress: Progress) -> None:
        start_instances(self.state, inventory, progress)

    def stop_marks(self, inventory: Inventory) -> dict[str, StopMark]:
        """VMs deleted by autostop's `down`; a stop by `dlvm stop` is in the state dir."""
        return autostop_deletions(self.state, inventory)

    def self_stop_command(self, action: str) -> str | None:
        return SELF_DELETE if action == "down" else SELF_STOP

    def doctor(self, reach: Reach) -> list[Check]:
        spec = self._spec
        found = [checks.terraform_check()]
        if spec is None:
            return found

        def credentials() -> str:
            from dlvm_cluster.providers.gcp.credentials import compute_clients

            compute_clients()
            return "Application Default Credentials found"

        def project() -> str:
            from dlvm_cluster.providers.gcp.credentials import compute_clients
            from dlvm_cluster.providers.gcp.preflight import preflight

            report = preflight(spec, compute_clients())
            return f"project, zones, types, quota and image ok (zones: {', '.join(report.zones)})"

        if not gcp_config(spec).public_ip:
            from dlvm_cluster.providers.gcp.preflight import check_tunnel_tool

            found.append(
                checks.probe(
                    "IAP tunnel (gcloud)",
                    check_tunnel_tool,
                    "install the Google Cloud CLI; private nodes are reached through "
                    "gcloud compute start-iap-tunnel",
                )
            )
        found.append(
            checks.probe("credentials", credentials, "run: gcloud auth application-default login")
        )
        if found[-1].ok:
            found.append(
                checks.probe("preflight", project, "see the message; fix the spec or the quota")
            )
        return found
