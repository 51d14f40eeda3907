"""The GPU network of EFA instance types: what the module attaches (shapes.efa_layout) as
`plan` shows it, and the settings jobs need to send NCCL's traffic over EFA.

The Deep Learning AMIs carry the EFA software (libfabric), the aws-ofi-nccl plugin NCCL loads
and the library path to both; what remains is to tell libfabric to use EFA and, on the P types
whose EFA does RDMA with the GPUs' memory, to allow it.

`dlvm check` reads what NCCL used (`read_transport`): NCCL names the plugin's network
("Using network Libfabric", "AWS Libfabric" before plugin 1.7 or where NCCL_NET asks for it)
and the plugin logs the libfabric provider it selected and the NICs it found ("NET/OFI Selected
provider is efa, fabric is efa-direct (found 32 nics)"; before plugin 1.14: "NET/OFI Selected
Provider is efa (found 4 nics)"). On a type with EFA, anything but the efa provider on all of
the type's EFA interfaces leaves the network it is paid for unused: the node fails the check.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from dlvm_cluster.providers.aws import shapes
from dlvm_cluster.providers.base import TransportReading

# NCCL's names of aws-ofi-nccl's network.
OFI_NETWORKS = ("Libfabric", "AWS Libfabric")
OFI_SELECTED = re.compile(
    r"NET/OFI Selected [Pp]rovider is ([A-Za-z0-9_;.-]{1,40})"
    r"(?:, fabric is ([A-Za-z0-9_.-]{1,64}))? \(found (\d{1,4}) nics\)"
)

# The families whose EFA reads and writes GPU memory directly (GPUDirect RDMA).
RDMA_FAMILIES = ("p4d", "p4de", "p5", "p5e", "p5en", "p6-b200")


def job_environment(instance_type: str) -> dict[str, str]:
    """What every setup, exec and job process on such a node gets (the cluster file's env
    overrides it); nothing for types without EFA."""
    if shapes.efa_interfaces(instance_type) == 0:
        return {}
    env = {"FI_PROVIDER": "efa"}
    if shapes.family(instance_type) in RDMA_FAMILIES:
        env["FI_EFA_USE_DEVICE_RDMA"] = "1"
    return env


def plan_line(instance_type: str, placement_group: bool) -> str | None:
    """The EFA layout and placement `plan` shows; None for types without EFA."""
    count = shapes.efa_interfaces(instance_type)
    if count == 0:
        return None
    cards = max(slot.network_card for slot in shapes.efa_layout(count)) + 1
    where = "a cluster placement group" if placement_group else "no placement group"
    return (
        f"network: {count} EFA-only interface{'s' if count > 1 else ''} per node on "
        f"{cards} network card{'s' if cards > 1 else ''} (plus the primary ENA interface), "
        f"{where}; NCCL uses them through aws-ofi-nccl"
    )


def read_transport(instance_type: str, network: str, net_lines: Sequence[str]) -> TransportReading:
    """What NCCL used on one node of `instance_type`: the plugin's provider and NICs as
    detail; a problem where the type's EFA was not used, or not all of it."""
    selected = None
    for line in net_lines:
        selected = OFI_SELECTED.match(line) or selected
    detail = ""
    if selected is not None:
        provider, fabric, nics = selected.group(1), selected.group(2), int(selected.group(3))
        shown = f"{provider} ({fabric})" if fabric and fabric != provider else provider
        detail = f"{shown}, {nics} NIC{'s' if nics != 1 else ''}"
    expected = shapes.efa_interfaces(instance_type)
    if expected == 0:
        return TransportReading(detail)
    efa = f"{instance_type}'s {expected} EFA interface{'s' if expected > 1 else ''}"
    if network not in OFI_NETWORKS:
        used = f"NCCL used {network}" if network else "NCCL did not say which network it used"
        return TransportReading(
            detail,
            f"{used}, not EFA: {efa} carried nothing (is the aws-ofi-nccl plugin on the "
            "library path? the Deep Learning AMIs have it)",
        )
    if selected is None:
        return TransportReading(detail)  # the plugin's own line not logged: nothing to judge
    if selected.group(1) != "efa":
        return TransportReading(
            detail,
            f"libfabric chose its {selected.group(1)} provider, not efa: {efa} carried nothing "
            "(FI_PROVIDER=efa is set for jobs; is the EFA driver loaded? fi_info -p efa)",
        )
    if int(selected.group(3)) < expected:
        return TransportReading(
            detail,
            f"aws-ofi-nccl found {selected.group(3)} EFA NICs of {efa}: "
            "the others carried nothing (fi_info -p efa lists the devices)",
        )
    return TransportReading(detail)
