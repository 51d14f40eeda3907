"""The keys of a gcp cluster file: `provider:` (GcpConfig) and the `nodes:` keys only Compute
Engine takes (GcpNodes), with the values Google accepts for them. Registered with the loader
by providers/gcp/kind.py; the rules that span several keys are in rules.py."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from dlvm_cluster.errors import ProvisionError
from dlvm_cluster.spec.model import ClusterSpec, Nodes, ProviderConfig, WholeNumber

SSH_USER_PATTERN = r"^[a-z_][a-z0-9_-]*$"
# A service account's email: user-managed (NAME@PROJECT.iam.gserviceaccount.com) or the
# Compute Engine default (NUMBER-compute@developer.gserviceaccount.com).
SERVICE_ACCOUNT_PATTERN = r"[a-z0-9][-a-z0-9._]*@[a-z0-9][-a-z0-9.]*\.gserviceaccount\.com"
NO_SERVICE_ACCOUNT = "none"
# How Compute Engine provides each VM: on demand, Spot, Dynamic Workload Scheduler flex-start
# (queued until capacity is free, for at most 7 days), or bound to a reservation's lifetime
# (calendar-mode reservations).
Provisioning = Literal["standard", "spot", "flex-start", "reservation-bound"]
FLEX_START_MAX_RUN_HOURS = 168
# Compute Engine's limit on a VM's max run duration (120 days).
MAX_RUN_HOURS = 120 * 24
ANY_RESERVATION = "any"
NO_RESERVATION = "none"
# A reservation in the cluster's project, or one shared from another: projects/P/reservations/R.
RESERVATION_NAME = r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?"
RESERVATION_PATTERN = (
    rf"{RESERVATION_NAME}|projects/[a-z][-a-z0-9]{{4,28}}[a-z0-9]/reservations/{RESERVATION_NAME}"
)
# A DLVM family name, family/NAME, or a full image path (optionally as a self link).
GCP_IMAGE_PATTERN = (
    r"(https://[a-z.]+/compute/v1/)?projects/[^/\s]+/global/images/(family/)?[a-z][-a-z0-9]*"
    r"|(family/)?[a-z][-a-z0-9]*"
)


def _service_account(value: str) -> str:
    if value != NO_SERVICE_ACCOUNT and not re.fullmatch(SERVICE_ACCOUNT_PATTERN, value):
        raise ValueError(
            "must be a service account's email (NAME@PROJECT.iam.gserviceaccount.com) or "
            f"{NO_SERVICE_ACCOUNT!r} to attach none"
        )
    return value


def _reservation(value: str) -> str:
    if value not in (ANY_RESERVATION, NO_RESERVATION) and not re.fullmatch(
        RESERVATION_PATTERN, value
    ):
        raise ValueError(
            "must be a reservation's NAME, projects/PROJECT/reservations/NAME for one shared "
            f"from another project, {ANY_RESERVATION!r} (any matching one) or "
            f"{NO_RESERVATION!r}"
        )
    return value


class GcpConfig(ProviderConfig):
    """Compute Engine VMs in one region; `zones` is the order in which zones are tried."""

    kind: Literal["gcp"]
    project: str = Field(min_length=1)
    region: str = Field(min_length=1)
    zones: list[str] = Field(min_length=1)
    # Who may reach nodes with external addresses on tcp/22 (required when public_ip is true).
    allowed_ssh_cidrs: list[str] = Field(default_factory=list)
    # An existing VPC (name, or projects/HOST/global/networks/NAME in a Shared VPC's host
    # project); None: one is made for the cluster.
    network: str | None = None
    subnetwork: str | None = None
    ssh_user: str = Field(default="dlvm", pattern=SSH_USER_PATTERN, max_length=32)
    # False: nodes without external addresses, reached through IAP TCP forwarding; a network
    # dlvm makes then gets Cloud NAT for egress.
    public_ip: bool = True
    # None: dlvm decides (on for the A3/A4 shapes whose GPU network it builds).
    compact_placement: bool | None = None
    # The account the nodes' software acts as (Cloud Storage, Logging), with the
    # cloud-platform scope so IAM alone decides. None: one made for the cluster, holding only
    # what it needs; an email: that existing account; "none": no account, so nothing on the
    # nodes reaches Google APIs.
    service_account: Annotated[str, AfterValidator(_service_account)] | None = None
    # Log in through OS Login (the user's Google identity) instead of ssh-keys metadata.
    # None: on when an organization policy requires it.
    os_login: bool | None = None
    # False: dlvm makes no firewall rules (a network administrator does; `plan` lists them).
    manage_firewall: bool = True


class GcpNodes(Nodes):
    """The nodes of a gcp cluster: the generic keys, and the VM's shape and how Compute Engine
    provides it."""

    machine_type: str | None = None
    spot: bool = False  # the same as provisioning: spot
    provisioning: Provisioning | None = None  # None: spot if `spot`, else standard
    max_run_hours: WholeNumber | None = Field(default=None, ge=1, le=MAX_RUN_HOURS)
    reservation: Annotated[str, AfterValidator(_reservation)] | None = None
    disk_gb: WholeNumber = Field(default=200, ge=10, le=65536)
    image: str | None = None
    disk_type: str | None = None  # pd-balanced unless the machine family needs another
    min_count: WholeNumber | None = Field(default=None, ge=1)  # accept fewer on stockout

    @property
    def provisioning_model(self) -> Provisioning:
        """The provisioning the nodes get: `provisioning`, else `spot: true` as its synonym."""
        if self.provisioning is not None:
            return self.provisioning
        return "spot" if self.spot else "standard"


def gcp_config(spec: ClusterSpec) -> GcpConfig:
    """The `provider:` of a gcp cluster's spec."""
    if not isinstance(spec.provider, GcpConfig):
        raise ProvisionError(f"cluster {spec.name!r} does not use the gcp provider")
    return spec.provider


def gcp_nodes(spec: ClusterSpec) -> GcpNodes:
    """The `nodes:` of a gcp cluster's spec."""
    if not isinstance(spec.nodes, GcpNodes):
        raise ProvisionError(f"cluster {spec.name!r} does not use the gcp provider")
    return spec.nodes
