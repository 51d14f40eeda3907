"""Specific reservations for `nodes.reservation`: which of provider.zones hold the named
reservation ready, with the nodes' machine type and enough VMs free (reservations.get)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dlvm_cluster.errors import ProvisionError
from dlvm_cluster.providers.gcp.config import (
    ANY_RESERVATION,
    NO_RESERVATION,
    GcpConfig,
    gcp_nodes,
)
from dlvm_cluster.providers.gcp.credentials import REQUEST_TIMEOUT, ComputeClients, call_api
from dlvm_cluster.providers.gcp.tfvars import node_shape
from dlvm_cluster.spec.model import ClusterSpec


@dataclass(frozen=True)
class ReservationRef:
    """A specific reservation: its project (the cluster's, or the one sharing it) and name."""

    project: str
    name: str
    written: str  # as nodes.reservation gives it


def reservation_ref(spec: ClusterSpec, provider: GcpConfig) -> ReservationRef | None:
    """The reservation nodes.reservation names, or None for any, none or the default."""
    written = gcp_nodes(spec).reservation
    if written is None or written in (ANY_RESERVATION, NO_RESERVATION):
        return None
    if written.startswith("projects/"):
        _, project, _, name = written.split("/")
        return ReservationRef(project, name, written)
    return ReservationRef(provider.project, written, written)


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


def reservation_zones(
    clients: ComputeClients,
    spec: ClusterSpec,
    ref: ReservationRef,
    zones: list[str],
    wanted: int,
    warnings: list[str],
) -> list[str]:
    """The zones whose copy of the reservation is ready, holds the nodes' machine type and has
    `wanted` VMs free. A reservation is zonal, so the other zones are dropped (with a warning)."""
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
    machine = node_shape(gcp_nodes(spec)).machine_type
    usable, problems = [], []
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
            usable.append(zone)
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
    return usable
