"""Specific reservations for `nodes.reservation`: which of provider.zones hold the named
reservation ready, with the nodes' machine type and enough VMs free (reservations.get), and
what the VMs must say to consume it there: a DENSE reservation (how Google delivers A3 Ultra,
A4 and A4X future reservations, and A3 capacity arranged with its account teams) takes only
VMs with provisioning model RESERVATION_BOUND, and one made with a compact placement policy
only VMs that name that same policy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dlvm_cluster.errors import ProvisionError
from dlvm_cluster.providers.gcp.config import (
    ANY_RESERVATION,
    NO_RESERVATION,
)
from dlvm_cluster.providers.gcp.credentials import REQUEST_TIMEOUT, ComputeClients, call_api
from dlvm_cluster.providers.gcp.plan import GcpPlan, ReservedCapacity

# Reservation.deployment_type of the reservations that take only reservation-bound VMs.
DENSE = "DENSE"


@dataclass(frozen=True)
class ReservationRef:
    """A specific reservation: its project (the cluster's, or the one sharing it) and name."""

    project: str
    name: str
    written: str  # as nodes.reservation gives it


def reservation_ref(plan: GcpPlan) -> ReservationRef | None:
    """The reservation nodes.reservation names, or None for any, none or the default."""
    written = plan.nodes.reservation
    if written is None or written in (ANY_RESERVATION, NO_RESERVATION):
        return None
    if written.startswith("projects/"):
        _, project, _, name = written.split("/")
        return ReservationRef(project, name, written)
    return ReservationRef(plan.config.project, written, written)


def _reservation(clients: ComputeClients, ref: ReservationRef, zone: str) -> Any:
    """reservations.get in `zone`, or None where the reservation does not exist."""
    from google.api_core import exceptions

    try:
        return call_api(
            f"reservation {ref.written} in {zone}",
            ref.project,
            lambda: clients.reservations.get(
                project=ref.project, zone=zone, reservation=ref.name, timeout=REQUEST_TIMEOUT
            ),
        )
    except exceptions.NotFound:
        return None


def reserved_capacity(reservation: Any) -> ReservedCapacity:
    """What a VM must carry to consume `reservation`: RESERVATION_BOUND for a DENSE one, and
    the reservation's placement policy (Reservation.resource_policies, at most one)."""
    policies = sorted(str(link) for link in dict(reservation.resource_policies).values())
    return ReservedCapacity(
        dense=str(reservation.deployment_type) == DENSE,
        placement_policy=_resource_path(policies[0]) if policies else "",
    )


def _resource_path(link: str) -> str:
    """projects/P/regions/R/resourcePolicies/N from a self link (the form Terraform takes)."""
    return link[link.find("projects/") :] if "projects/" in link else link


def reservation_zones(
    clients: ComputeClients,
    plan: GcpPlan,
    ref: ReservationRef,
    zones: list[str],
    wanted: int,
    warnings: list[str],
) -> dict[str, ReservedCapacity]:
    """The zones whose copy of the reservation is ready, holds the nodes' machine type and has
    `wanted` VMs free, each with what its VMs must carry to consume it. A reservation is
    zonal, so the other zones are dropped (with a warning)."""
    found = {
        zone: reservation
        for zone in zones
        if (reservation := _reservation(clients, ref, zone)) is not None
    }
    if not found:
        raise ProvisionError(
            f"reservation {ref.written} does not exist in {', '.join(zones)} "
            f"(project {ref.project}), or your account cannot see it",
            hint="a reservation belongs to one zone: put its zone in provider.zones "
            f"(gcloud compute reservations list --project {ref.project}); one shared from "
            "another project is written projects/PROJECT/reservations/NAME",
        )
    machine = plan.shape.machine_type
    usable: dict[str, ReservedCapacity] = {}
    problems: list[str] = []
    for zone, reservation in found.items():
        specific = reservation.specific_reservation
        held = str(specific.instance_properties.machine_type).rsplit("/", 1)[-1]
        free = int(specific.count) - int(specific.in_use_count)
        if str(reservation.status) != "READY":
            problems.append(f"in {zone} it is {reservation.status}")
        elif held and held != machine:  # empty: made from an instance template, not checked
            problems.append(f"in {zone} it holds {held} VMs, and the nodes are {machine}")
        elif wanted > free:
            problems.append(
                f"in {zone} {free} of its {specific.count} VMs are free, and this cluster "
                f"needs {wanted}"
            )
        else:
            usable[zone] = reserved_capacity(reservation)
    if not usable:
        raise ProvisionError(
            f"reservation {ref.written} cannot take these nodes: " + "; ".join(problems),
            hint="set nodes.machine_type to the machine type the reservation holds and ask for "
            "no more nodes than it has free (delete VMs that use it, or use a bigger "
            "reservation); gcloud compute reservations describe shows both",
        )
    skipped = [zone for zone in zones if zone not in usable]
    if skipped:
        warnings.append(
            f"zones {', '.join(skipped)} are skipped: reservation {ref.written} has no room "
            f"for these nodes there ({'; '.join(problems) or 'it is not there'})"
        )
    for zone, reserved in usable.items():
        if reserved.dense and plan.nodes.max_run_hours is not None:
            raise ProvisionError(
                f"reservation {ref.written} in {zone} is a dense reservation: its VMs must be "
                "reservation-bound, and Compute Engine gives those no maximum run time (they "
                "run until the reservation ends)",
                hint="remove nodes.max_run_hours (autostop's max_hours still powers the "
                "cluster off)",
            )
    return usable
