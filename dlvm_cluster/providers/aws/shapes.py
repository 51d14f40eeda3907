"""What dlvm knows of EC2 GPU instance types offline, as pure lookups.

The figures are EC2's own (DescribeInstanceTypes: VCpuInfo.DefaultVCpus, GpuInfo,
NetworkInfo.EfaInfo.MaximumEfaInterfaces, SupportedUsageClasses); tests/unit/test_aws_shapes.py
checks every row against that API's answer as the moto package ships it, and preflight reads
the same fields for the type a spec names, so a type missing here still gets its quota checked.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InstanceShape:
    """One instance type: its vCPUs (what quotas count), GPUs, EFA interfaces and whether
    Capacity Blocks sell it."""

    vcpus: int
    gpu: str
    gpus: int
    efa_interfaces: int
    capacity_blocks: bool = False


def _family(
    name: str, gpu: str, sizes: dict[str, tuple[int, int, int]]
) -> dict[str, InstanceShape]:
    """The types of one family: size -> (vCPUs, GPUs, EFA interfaces)."""
    return {f"{name}.{size}": InstanceShape(v, gpu, g, e) for size, (v, g, e) in sizes.items()}


# G5 and G6 sizes alike: one GPU up to 16xlarge, EFA from 8xlarge.
_G_SIZES = {
    "xlarge": (4, 1, 0),
    "2xlarge": (8, 1, 0),
    "4xlarge": (16, 1, 0),
    "8xlarge": (32, 1, 1),
    "12xlarge": (48, 4, 1),
    "16xlarge": (64, 1, 1),
    "24xlarge": (96, 4, 1),
    "48xlarge": (192, 8, 1),
}
# The accelerated types dlvm is made for: EFA where EC2 offers it (every network card of the
# P types carries one), capacity blocks for the P types.
SHAPES: dict[str, InstanceShape] = {
    "p4d.24xlarge": InstanceShape(96, "A100", 8, 4, capacity_blocks=True),
    "p4de.24xlarge": InstanceShape(96, "A100", 8, 4, capacity_blocks=True),
    "p5.4xlarge": InstanceShape(16, "H100", 1, 1, capacity_blocks=True),
    "p5.48xlarge": InstanceShape(192, "H100", 8, 32, capacity_blocks=True),
    "p5e.48xlarge": InstanceShape(192, "H200", 8, 32, capacity_blocks=True),
    "p5en.48xlarge": InstanceShape(192, "H200", 8, 16, capacity_blocks=True),
    "p6-b200.48xlarge": InstanceShape(192, "B200", 8, 8, capacity_blocks=True),
    **_family("g5", "A10G", _G_SIZES),
    **_family("g6", "L4", _G_SIZES),
    **_family("g6e", "L40S", {**_G_SIZES, "24xlarge": (96, 4, 2), "48xlarge": (192, 8, 4)}),
}
# A node's type when the spec names none: the smallest L4 type (one GPU).
DEFAULT_INSTANCE_TYPE = "g6.xlarge"


def shape(instance_type: str) -> InstanceShape | None:
    return SHAPES.get(instance_type)


def gpus(instance_type: str) -> int:
    """GPUs per node as far as known offline (0 for a type the table lacks)."""
    found = SHAPES.get(instance_type)
    return found.gpus if found else 0


def efa_interfaces(instance_type: str) -> int:
    found = SHAPES.get(instance_type)
    return found.efa_interfaces if found else 0


def family(instance_type: str) -> str:
    """p5 of p5.48xlarge, p6-b200 of p6-b200.48xlarge."""
    return instance_type.split(".", 1)[0]


# Service Quotas (service code ec2): the running vCPUs of On-Demand instances, and of Spot
# requests, per instance-family class, as (quota code, class name).
ON_DEMAND_QUOTAS = {
    "standard": ("L-1216C47A", "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances"),
    "g": ("L-DB2E81BA", "Running On-Demand G and VT instances"),
    "p": ("L-417A185B", "Running On-Demand P instances"),
}
SPOT_QUOTAS = {
    "standard": ("L-34B43A08", "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests"),
    "g": ("L-3819A6DF", "All G and VT Spot Instance Requests"),
    "p": ("L-7212CCBC", "All P Spot Instance Requests"),
}
_STANDARD_LETTERS = frozenset("acdhimrtz")


def quota_class(instance_type: str) -> str | None:
    """Which vCPU quota an instance type counts against: standard, g (G and VT) or p; None
    for the families with quotas of their own (F, Inf, Trn, X, ...), which preflight leaves
    to EC2."""
    name = family(instance_type)
    if name.startswith(("vt", "g")):
        return "g"
    if name.startswith("p"):
        return "p"
    if name.startswith(("inf", "trn", "dl", "x", "u-", "f", "mac", "hpc")):
        return None
    return "standard" if name[:1] in _STANDARD_LETTERS else None


@dataclass(frozen=True)
class EfaInterface:
    """One EFA-only interface: where it attaches (EC2's network card and device index)."""

    network_card: int
    device_index: int


def efa_layout(count: int) -> list[EfaInterface]:
    """Where each of `count` EFA-only interfaces goes, as EC2's guide for types with several
    network cards lays them out: the primary interface (card 0, device 0) stays an ENA
    interface, the first EFA-only interface is device 1 of card 0, and each further one is
    device 0 of the next network card."""
    if count <= 0:
        return []
    return [EfaInterface(0, 1), *(EfaInterface(card, 0) for card in range(1, count))]
