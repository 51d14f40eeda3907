"""The `aws` provider: EC2 instances made by terraform/aws, with preflight, zone failover,
host keys from the console, instance states, stop and start, and prices."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from dlvm_cluster.errors import StateError, UsageError
from dlvm_cluster.inventory import Inventory, Node
from dlvm_cluster.progress import Progress
from dlvm_cluster.providers import checks
from dlvm_cluster.providers.aws import gpu_network, instances, power, storage
from dlvm_cluster.providers.aws.api import AwsClients, aws_clients, call
from dlvm_cluster.providers.aws.config import aws_config
from dlvm_cluster.providers.aws.converge import (
    clients_for,
    provision_aws,
    render_aws,
    replace_aws_nodes,
)
from dlvm_cluster.providers.aws.report import (
    capacity_facts,
    node_instances,
    node_rates,
    plan_notes,
    price_text,
)
from dlvm_cluster.providers.aws.tfvars import (
    instance_name,
    instance_type,
    reservation_preference,
)
from dlvm_cluster.providers.base import (
    BootReadiness,
    Bound,
    CapacityFacts,
    Check,
    Converge,
    HourlyRates,
    NodeState,
    Provider,
    ProviderPlan,
    Reach,
    StopMark,
    TransportReading,
)
from dlvm_cluster.providers.terraformed import applied_tfvars, destroy_module, plan_module
from dlvm_cluster.provision.render import RenderedModule
from dlvm_cluster.spec.model import ClusterSpec
from dlvm_cluster.state import ClusterState


def state_clients(state: ClusterState) -> AwsClients:
    """The clients of the region (and profile) the cluster was applied in."""
    tfvars = applied_tfvars(state)
    region = tfvars.get("region")
    if not isinstance(region, str) or not region:
        raise StateError(
            f"cluster {state.name!r} has no AWS region recorded",
            hint="run `dlvm up FILE` to create it, or `dlvm down` to forget it",
        )
    return aws_clients(region, str(tfvars.get("profile") or "") or None)


def _optional_clients(spec: ClusterSpec) -> AwsClients | None:
    try:
        return clients_for(spec)
    except Exception:
        return None


class Ec2(Bound):
    """The `aws` provider (see the module docstring), bound to a cluster's state dir and spec."""

    owns_machines = True

    def check_host(self) -> None:
        return None

    def provision(self, request: Converge) -> tuple[Inventory, bool]:
        return provision_aws(request)

    def replace_nodes(self, request: Converge, names: list[str]) -> Inventory:
        return replace_aws_nodes(request, names)

    def plan(self, request: Converge) -> ProviderPlan:
        return plan_module(render_aws(request.spec, request.state), request.state, request.progress)

    def plan_notes(self) -> list[str]:
        return plan_notes(self.spec, _optional_clients(self.spec))

    def render(self) -> RenderedModule:
        return render_aws(self.spec, self.state)

    def storage_script(self) -> str:
        """Mountpoint for Amazon S3 mounts kept by systemd units (providers/aws/storage.py)."""
        return storage.storage_script(self.spec)

    def destroy(self, progress: Progress) -> None:
        destroy_module(self.state, progress)

    def node_states(self, inventory: Inventory) -> dict[str, NodeState]:
        found = node_instances(self.state, inventory, state_clients(self.state))
        return {name: instance.node_state for name, instance in found.items()}

    def provider_id(self, node: Node) -> str:
        return instance_name(self.state.name, node.name)

    def status_price(self, nodes: int) -> str | None:
        spec = self.spec
        return price_text(spec, _optional_clients(spec), nodes, self._zone())

    def _zone(self) -> str:
        """The zone the nodes run in (the last apply's), else the first of provider.zones."""
        zones = aws_config(self.spec).zones
        applied = applied_tfvars(self.state).get("zone")
        return applied if isinstance(applied, str) and applied in zones else zones[0]

    def boot_readiness(self) -> BootReadiness | None:
        return None  # no boot-time setup dlvm waits for on EC2's images

    def capacity(self) -> CapacityFacts | None:
        """With the end of the named reservation or Capacity Block, read from EC2."""
        reserved = reservation_preference(self.spec)[1]
        return capacity_facts(self.spec, _optional_clients(self.spec) if reserved else None)

    def hourly_rates(self) -> HourlyRates | None:
        """The instance's price (On-Demand, or the zone's Spot price now) and its root
        volume's, asked of AWS; None for a Capacity Block (paid up front) or without prices."""
        spec = self.spec
        return node_rates(spec, _optional_clients(spec), self._zone())

    def stop_nodes(self, inventory: Inventory, progress: Progress, *, by: str) -> None:
        if applied_tfvars(self.state).get("market") == "spot":
            raise UsageError(
                f"cluster {self.state.name!r} runs on Spot instances, which EC2 can terminate "
                "but not stop",
                hint="run `dlvm down` to end them (the S3 storage stays), or make the cluster "
                "with provisioning: standard to stop and start it",
            )
        clients = state_clients(self.state)
        found = node_instances(self.state, inventory, clients)
        progress.stage("stopping instances")
        instances.stop(clients, found)

    def start_nodes(self, inventory: Inventory, progress: Progress) -> None:
        clients = state_clients(self.state)
        found = node_instances(self.state, inventory, clients)
        progress.stage("starting instances")
        instances.start(clients, found)

    def stop_marks(self, inventory: Inventory) -> dict[str, StopMark]:
        """Instances that shut themselves down (autostop); `dlvm stop`'s are in the state dir."""
        clients = state_clients(self.state)
        return power.self_stop_marks(node_instances(self.state, inventory, clients))

    def self_stop_command(self, action: str) -> str | None:
        return power.self_stop_command(action)

    def read_transport(self, network: str, net_lines: Sequence[str]) -> TransportReading:
        """EFA through aws-ofi-nccl: the libfabric provider and NICs, checked against the
        instance type's EFA interfaces (providers/aws/gpu_network.py)."""
        return gpu_network.read_transport(instance_type(self.spec), network, net_lines)

    def doctor(self, reach: Reach) -> list[Check]:
        found = [checks.terraform_check()]
        spec = self._spec
        if spec is None:
            return found

        def credentials() -> str:
            sts = clients_for(spec).sts
            identity = call("checking the credentials", lambda: sts.get_caller_identity())
            return f"AWS account {identity['Account']} as {identity['Arn']}"

        def preflight() -> str:
            from dlvm_cluster.providers.aws.preflight import preflight as check

            report = check(spec, clients_for(spec))
            zones = ", ".join(report.zones)
            return f"zones, type, capacity, quota, AMI and buckets ok (zones: {zones})"

        found.append(
            checks.probe(
                "credentials",
                credentials,
                "run: aws configure (or aws sso login), or set AWS_PROFILE",
            )
        )
        if found[-1].ok:
            found.append(
                checks.probe("preflight", preflight, "see the message; fix the spec or the quota")
            )
        return found


if TYPE_CHECKING:
    # mypy checks here that the implementation has the whole interface.
    _IMPLEMENTED: Provider = Ec2(ClusterState.for_name("typed"))
