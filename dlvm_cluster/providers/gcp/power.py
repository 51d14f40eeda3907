"""Stopping and starting a gcp cluster's VMs (`dlvm stop`, `dlvm start`, `up` on a stopped
cluster), and what a node runs to apply autostop to its own VM.

A stopped VM (TERMINATED) keeps its boot disk and host keys; only the disk is billed. A guest
`shutdown -h now` leaves the VM TERMINATED too, which is how a node's autostop watcher stops
the cluster without any API right. Taking it down (deleting the VMs) from the node needs the
nodes' service account to hold `compute.instances.delete` on the node's own VM: terraform/gcp
grants it, with a custom role of that permission alone (and `compute.disks.delete` on the
boot disk), on each of the cluster's VMs and nothing else (identity.py). A flex-start gang's
VMs belong to its managed instance group: a node leaves through the group, and the role holds
`compute.instanceGroupManagers.update` on that group alone.
"""

from __future__ import annotations

from datetime import datetime

from dlvm_cluster.errors import ProvisionError, UsageError
from dlvm_cluster.inventory import Inventory
from dlvm_cluster.progress import Progress
from dlvm_cluster.providers.base import StopMark
from dlvm_cluster.providers.gcp.credentials import ComputeClients, compute_clients
from dlvm_cluster.providers.gcp.hostkeys import NodeRef, node_refs_for
from dlvm_cluster.providers.gcp.instances import (
    MISSING,
    deletions,
    group_deletions,
    halt,
    instance_states,
    wake,
)
from dlvm_cluster.providers.terraformed import applied_tfvars
from dlvm_cluster.state import ClusterState

DELETE_GRANT = (
    "compute.instances.delete on its own VM, or compute.instanceGroupManagers.update on its group"
)
FLEX_START = "FLEX_START"  # the tfvars' provisioning_model of flex-start VMs

# The node powers its own VM off: Compute Engine then shows it TERMINATED, disk kept.
SELF_STOP = "sudo -n shutdown -h now || shutdown -h now"

# The node deletes its own VM through the Compute API, with the token of the VM's service
# account from the metadata server (the account needs DELETE_GRANT). A VM of a flex-start gang
# (its `created-by` metadata names the managed instance group that made it) leaves through the
# group instead: instanceGroupManagers.deleteInstances deletes it and lowers the group's size,
# where a VM deleted by itself would be made again by its group. Where it cannot, the VM is
# powered off instead: a cluster told to go down must not run (and bill) on.
SELF_DELETE = (
    "( md=http://metadata.google.internal/computeMetadata/v1; h='Metadata-Flavor: Google'; "
    'token=$(curl -sf -H "$h" "$md/instance/service-accounts/default/token" '
    "| python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])') "
    '&& zone=$(curl -sf -H "$h" "$md/instance/zone") && zone=${zone##*/} '
    '&& name=$(curl -sf -H "$h" "$md/instance/name") '
    '&& project=$(curl -sf -H "$h" "$md/project/project-id") '
    "&& api=https://compute.googleapis.com/compute/v1/projects/$project/zones/$zone "
    '&& group=$(curl -sf -H "$h" "$md/instance/attributes/created-by" || true) '
    '&& case "$group" in '
    "*/instanceGroupManagers/*) "
    'curl -sf -X POST -H "Authorization: Bearer $token" -H "Content-Type: application/json" '
    '-d "{\\"instances\\": [\\"zones/$zone/instances/$name\\"]}" '
    '"$api/instanceGroupManagers/${group##*/}/deleteInstances" ;; '
    '*) curl -sf -X DELETE -H "Authorization: Bearer $token" "$api/instances/$name" ;; '
    "esac"
    f" ) || {{ echo 'cannot delete this VM (its service account needs {DELETE_GRANT}): "
    f"powering it off instead' >&2; {SELF_STOP}; }}"
)


def _where(state: ClusterState) -> tuple[str, str]:
    tfvars = applied_tfvars(state)
    project, zone = tfvars.get("project"), tfvars.get("zone")
    if not isinstance(project, str) or not isinstance(zone, str) or not project or not zone:
        raise ProvisionError(
            f"cluster {state.name!r} has no Google Cloud project and zone recorded",
            hint="run `dlvm up FILE` to create it",
        )
    return project, zone


def _refs(
    state: ClusterState, inventory: Inventory, clients: ComputeClients | None = None
) -> tuple[ComputeClients, str, list[NodeRef]]:
    project, zone = _where(state)
    refs = node_refs_for(inventory.cluster, zone, [node.name for node in inventory.nodes])
    return clients if clients is not None else compute_clients(), project, refs


def stop_instances(state: ClusterState, inventory: Inventory, progress: Progress) -> None:
    if applied_tfvars(state).get("provisioning_model") == FLEX_START:
        raise UsageError(
            f"cluster {state.name!r} runs on flex-start VMs, which cannot be stopped: Compute "
            "Engine holds no capacity for a stopped one, and its run time keeps counting",
            hint="`dlvm down` deletes the VMs (nothing is billed after); `dlvm up` queues for "
            "new capacity later",
        )
    clients, project, refs = _refs(state, inventory)
    progress.stage("stopping VMs")
    for ref in refs:
        halt(clients, project, ref)


def start_instances(state: ClusterState, inventory: Inventory, progress: Progress) -> None:
    clients, project, refs = _refs(state, inventory)
    progress.stage("starting VMs")
    for ref in refs:
        woken = wake(clients, project, ref)
        if woken.failed:
            raise ProvisionError(
                f"could not start {ref.instance}: {woken.failed}",
                hint="run `dlvm up`: it recreates a VM that cannot be started",
            )


DEFAULT_SERVICE_ACCOUNT_SUFFIX = "-compute@developer.gserviceaccount.com"


def _nodes_account(state: ClusterState) -> str:
    """The nodes' service account as the last apply gave it ("" : Compute Engine's default,
    told by its suffix)."""
    return str(applied_tfvars(state).get("service_account_email") or "")


def gang_group(cluster: str) -> str:
    """The managed instance group of a flex-start gang, as terraform/gcp names it."""
    return f"dlvm-{cluster}"


def autostop_deletions(
    state: ClusterState, inventory: Inventory, *, clients: ComputeClients | None = None
) -> dict[str, StopMark]:
    """The nodes whose VM was deleted by the nodes' own service account: autostop's `down`
    (a user's or Terraform's delete is not), with when, from the zone's operations. A flex-start
    gang's nodes leave through their group: its missing nodes went for autostop when the
    nodes' account asked the group to delete VMs (it may change nothing else)."""
    api, project, refs = _refs(state, inventory, clients)
    states = instance_states(api, project, refs)
    missing = {ref.instance: ref.name for ref in refs if states[ref.name].status == MISSING}
    if not missing:
        return {}
    account = _nodes_account(state)

    def ours(user: str) -> bool:
        return user == account if account else user.endswith(DEFAULT_SERVICE_ACCOUNT_SUFFIX)

    found: dict[str, str] = {}
    zone = refs[0].zone
    for instance, (user, when) in deletions(api, project, zone).items():
        if instance in missing and ours(user):
            found[missing[instance]] = when
    if applied_tfvars(state).get("flex_gang") is True:
        left = [
            when
            for user, when in group_deletions(api, project, zone, gang_group(inventory.cluster))
            if ours(user)
        ]
        if left:
            latest = max(left, key=_timestamp)
            found.update({name: latest for name in missing.values() if name not in found})
    return {
        name: StopMark(by="autostop", at=_timestamp(when), action="down")
        for name, when in found.items()
        if _timestamp(when) >= 0
    }


def _timestamp(when: str) -> float:
    """RFC 3339 as seconds since the epoch; -1 when it cannot be read."""
    try:
        return datetime.fromisoformat(when).timestamp()
    except ValueError:
        return -1.0
