"""The GPU network of EFA instance types: what the module attaches (shapes.efa_layout) as
`plan` shows it, and the settings jobs need to send NCCL's traffic over EFA.

The Deep Learning AMIs carry the EFA software (libfabric), the aws-ofi-nccl plugin NCCL loads
and the library path to both; what remains is to tell libfabric to use EFA and, on the P types
whose EFA does RDMA with the GPUs' memory, to allow it.
"""

from __future__ import annotations

from dlvm_cluster.providers.aws import shapes

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
