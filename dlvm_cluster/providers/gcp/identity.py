"""Who the nodes are and who may reach them: the cluster's own service account and what it is
granted, self-delete for autostop's `down`, the network's project (Shared VPC), and the IAP
tunnel private nodes are reached through.

All pure: the names here are derived from the spec, so `dlvm render` shows them and `status`
knows the account the nodes act as without asking Google.
"""

from __future__ import annotations

import hashlib
import re

from dlvm_cluster.providers.gcp.config import NO_SERVICE_ACCOUNT, GcpConfig
from dlvm_cluster.providers.gcp.plan import GcpPlan
from dlvm_cluster.spec.model import ClusterSpec

READ_WRITE_ROLE = "roles/storage.objectUser"
READ_ONLY_ROLE = "roles/storage.objectViewer"
# Granted on the project to an account dlvm makes for a cluster: logs and metrics only.
NODE_PROJECT_ROLES = ("roles/logging.logWriter", "roles/monitoring.metricWriter")
# What the self-delete role holds; it is granted on the cluster's own VMs and boot disks only.
SELF_DELETE_PERMISSIONS = ("compute.instances.delete", "compute.disks.delete")
# Where IAP's TCP forwarding connects from (Google documents this one range).
IAP_SOURCE_RANGE = "35.235.240.0/20"
ACCOUNT_ID_MAX = 30
_NETWORK_PROJECT = re.compile(r"(?:.*/)?projects/([^/]+)/global/networks/[^/]+")


def creates_service_account(provider: GcpConfig) -> bool:
    """No account named: dlvm makes one for the cluster."""
    return provider.service_account is None


def service_account_id(cluster: str) -> str:
    """The account id of the cluster's own account: dlvm-CLUSTER, or, where that is longer
    than Google's 30 characters, a prefix of it and a hash of the whole name (ids must stay
    apart across clusters of one project)."""
    whole = f"dlvm-{cluster}"
    if len(whole) <= ACCOUNT_ID_MAX:
        return whole
    digest = hashlib.sha256(cluster.encode()).hexdigest()[:8]
    return f"{whole[: ACCOUNT_ID_MAX - 9].rstrip('-')}-{digest}"


def nodes_service_account(plan: GcpPlan) -> str:
    """The email the nodes act as; "" for the project's Compute Engine default account (never
    chosen by dlvm: only `service_account: none` leaves the nodes without one)."""
    spec, provider = plan.spec, plan.config
    if creates_service_account(provider):
        return f"{service_account_id(spec.name)}@{provider.project}.iam.gserviceaccount.com"
    if provider.service_account == NO_SERVICE_ACCOUNT:
        return ""
    return provider.service_account or ""


def bucket_grants(spec: ClusterSpec) -> dict[str, str]:
    """Bucket -> the role its mounts need: object user where any mount writes, else viewer."""
    grants: dict[str, str] = {}
    for entry in spec.storage:
        role = READ_ONLY_ROLE if entry.read_only else READ_WRITE_ROLE
        if grants.get(entry.bucket_name) != READ_WRITE_ROLE:
            grants[entry.bucket_name] = role
    return grants


def self_delete(plan: GcpPlan) -> bool:
    """autostop's `down` with an account on the nodes: grant them deleting their own VMs."""
    spec, provider = plan.spec, plan.config
    return (
        spec.autostop is not None
        and spec.autostop.action == "down"
        and provider.service_account != NO_SERVICE_ACCOUNT
    )


def self_delete_role_id(cluster: str) -> str:
    """A custom role per cluster: `down` removes it with the cluster."""
    return "dlvmSelfDelete_" + cluster.replace("-", "_")


def network_project(provider: GcpConfig) -> str:
    """The project of provider.network: a Shared VPC's host project when the network is named
    by its path there, else the cluster's own project."""
    match = _NETWORK_PROJECT.fullmatch(provider.network or "")
    return match.group(1) if match else provider.project


def firewall_rules_needed(plan: GcpPlan) -> list[str]:
    """The firewall rules the cluster needs, in words a network administrator can act on
    (for `manage_firewall: false`, where dlvm makes none)."""
    spec, provider = plan.spec, plan.config
    tag = f"dlvm-{spec.name}"
    network = provider.network or f"dlvm-{spec.name}"
    where = f"network {network} (project {network_project(provider)})"
    source = (
        f"from {IAP_SOURCE_RANGE} (IAP TCP forwarding)"
        if not provider.public_ip
        else "from " + ", ".join(provider.allowed_ssh_cidrs)
    )
    return [
        f"ingress tcp:22 {source} to instances tagged {tag}, on {where}",
        f"ingress all protocols from instances tagged {tag} to instances tagged {tag}, on {where}",
    ]


def iap_tunnel_command(instance: str, zone: str, project: str) -> tuple[str, ...]:
    """The command that carries an SSH connection to a private node through IAP: the Google
    Cloud CLI's own tunnel, speaking on its standard input and output (an ssh ProxyCommand)."""
    return (
        "gcloud",
        "compute",
        "start-iap-tunnel",
        instance,
        "22",
        "--listen-on-stdin",
        f"--zone={zone}",
        f"--project={project}",
        "--verbosity=warning",
    )
