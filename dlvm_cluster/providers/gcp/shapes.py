"""What dlvm knows of Compute Engine machine families, as pure lookups.

Preflight checks the same facts against the API (MachineType.accelerators,
AcceleratorType.maximum_cards_per_instance); these tables give offline defaults and prices.
"""

from __future__ import annotations

from dlvm_cluster.providers.gcp.rules import N1_GPU_COUNTS

# Machine types whose GPUs come with the machine: no guest_accelerator is sent for them. A type
# of these families that the table below lacks still gets the GPU driver and TERMINATE; preflight
# reads its GPUs from the API (MachineType.accelerators).
BUILT_IN_GPU_PREFIXES = ("a2-", "a3-", "a4-", "a4x-", "g2-", "g4-")

# machine type -> (accelerator type, GPUs per VM), from Google's accelerator-optimized machine
# family and GPU machine type pages (A2, A3 High/Edge/Mega/Ultra, A4, A4X, G2, G4).
BUILT_IN_GPUS: dict[str, tuple[str, int]] = {
    **{f"a2-highgpu-{n}g": ("nvidia-tesla-a100", n) for n in (1, 2, 4, 8)},
    "a2-megagpu-16g": ("nvidia-tesla-a100", 16),
    **{f"a2-ultragpu-{n}g": ("nvidia-a100-80gb", n) for n in (1, 2, 4, 8)},
    **{f"a3-highgpu-{n}g": ("nvidia-h100-80gb", n) for n in (1, 2, 4, 8)},
    "a3-edgegpu-8g": ("nvidia-h100-80gb", 8),
    "a3-megagpu-8g": ("nvidia-h100-mega-80gb", 8),
    "a3-ultragpu-8g": ("nvidia-h200-141gb", 8),
    "a4-highgpu-8g": ("nvidia-b200", 8),
    # Arm (Grace) hosts: they need an Arm image.
    "a4x-highgpu-4g": ("nvidia-gb200", 4),
    **{f"g2-standard-{n}": ("nvidia-l4", 1) for n in (4, 8, 12, 16, 32)},
    "g2-standard-24": ("nvidia-l4", 2),
    "g2-standard-48": ("nvidia-l4", 4),
    "g2-standard-96": ("nvidia-l4", 8),
    "g4-standard-48": ("nvidia-rtx-pro-6000", 1),
    "g4-standard-96": ("nvidia-rtx-pro-6000", 2),
    "g4-standard-192": ("nvidia-rtx-pro-6000", 4),
    "g4-standard-384": ("nvidia-rtx-pro-6000", 8),
}
# Variants that keep the GPUs and NICs of the type they extend (a3-highgpu-8g-nolssd: no Local SSD;
# a4-highgpu-8g-lowmem: less memory).
_VARIANT_SUFFIXES = ("-nolssd", "-lowmem")

# For a spec that names a GPU but no machine type: the smallest common shape for one node.
_BUILT_IN_BY_GPU: dict[str, dict[int, str]] = {
    "nvidia-tesla-a100": {
        1: "a2-highgpu-1g",
        2: "a2-highgpu-2g",
        4: "a2-highgpu-4g",
        8: "a2-highgpu-8g",
        16: "a2-megagpu-16g",
    },
    "nvidia-a100-80gb": {n: f"a2-ultragpu-{n}g" for n in (1, 2, 4, 8)},
    "nvidia-h100-80gb": {n: f"a3-highgpu-{n}g" for n in (1, 2, 4, 8)},
    "nvidia-h100-mega-80gb": {8: "a3-megagpu-8g"},
    "nvidia-h200-141gb": {8: "a3-ultragpu-8g"},
    "nvidia-b200": {8: "a4-highgpu-8g"},
    "nvidia-l4": {
        1: "g2-standard-12",
        2: "g2-standard-24",
        4: "g2-standard-48",
        8: "g2-standard-96",
    },
    "nvidia-rtx-pro-6000": {
        1: "g4-standard-48",
        2: "g4-standard-96",
        4: "g4-standard-192",
        8: "g4-standard-384",
    },
}
# GPUs attached to N1 VMs (the only family that takes guest accelerators): the spec's table.
ATTACHABLE_GPUS = tuple(N1_GPU_COUNTS)
DEFAULT_N1_MACHINE = "n1-standard-8"
DEFAULT_CPU_MACHINE = "n2-standard-8"

# Regional quota metric of each GPU type (the Spot form adds PREEMPTIBLE_). H100/H200 have no
# such metric in the API's Quota enum: their quota is per family and preflight cannot verify it.
_GPU_QUOTA_METRICS = {
    "nvidia-tesla-t4": "NVIDIA_T4_GPUS",
    "nvidia-l4": "NVIDIA_L4_GPUS",
    "nvidia-tesla-a100": "NVIDIA_A100_GPUS",
    "nvidia-a100-80gb": "NVIDIA_A100_80GB_GPUS",
    "nvidia-tesla-v100": "NVIDIA_V100_GPUS",
    "nvidia-tesla-p100": "NVIDIA_P100_GPUS",
    "nvidia-tesla-p4": "NVIDIA_P4_GPUS",
    "nvidia-h100-80gb": "NVIDIA_H100_GPUS",
    "nvidia-h100-mega-80gb": "NVIDIA_H100_MEGA_GPUS",
    "nvidia-h200-141gb": "NVIDIA_H200_GPUS",
    "nvidia-b200": "NVIDIA_B200_GPUS",
    "nvidia-rtx-pro-6000": "NVIDIA_RTX_PRO_6000_GPUS",
}

# Families with gVNIC as dlvm's default NIC (A3 and G4 need it; A2/G2 get their full bandwidth
# with it).
_GVNIC_FAMILIES = ("a2", "a3", "a4", "a4x", "g2", "g4")
# Families that accept a compact placement policy (Google's placement-policy overview; the list
# changes, so an unknown family is a warning, not an error).
COMPACT_PLACEMENT_FAMILIES = (
    *("a2", "a3", "a4", "g2", "g4"),  # with GPUs
    *("c2", "c2d", "c3", "c3d", "h3", "n2", "n2d"),
)
# Families whose hosts have Arm CPUs (A4X: NVIDIA Grace with GB200): they boot Arm64 images only.
_ARM_FAMILIES = ("a4x",)
# Families whose boot disk cannot be pd-balanced (Hyperdisk only).
_HYPERDISK_ONLY = ("a3-ultragpu", "a4-", "a4x-", "g4-")
DEFAULT_DISK_TYPE = "pd-balanced"


def family(machine_type: str) -> str:
    """`a2` for a2-highgpu-1g: what placement, NIC and quota rules are keyed on."""
    return machine_type.split("-", 1)[0]


def carries_gpus(machine_type: str) -> bool:
    """Accelerator-optimized types (a2, a3, a4, a4x, g2, g4) come with GPUs that cannot be
    chosen."""
    return machine_type.startswith(BUILT_IN_GPU_PREFIXES)


def base_machine_type(machine_type: str) -> str:
    """a3-highgpu-8g for a3-highgpu-8g-nolssd: the type a variant keeps its GPUs and NICs of."""
    for suffix in _VARIANT_SUFFIXES:
        machine_type = machine_type.removesuffix(suffix)
    return machine_type


def built_in_gpus(machine_type: str) -> tuple[str, int] | None:
    """(type, count) of the GPUs a machine type carries, when known offline."""
    return BUILT_IN_GPUS.get(base_machine_type(machine_type))


def takes_attached_gpus(machine_type: str) -> bool:
    return family(machine_type) == "n1"


def default_machine_type(accelerator_type: str | None, count: int) -> str | None:
    """A machine type for a spec that names only its GPUs; None when no sensible default."""
    if accelerator_type is None:
        return DEFAULT_CPU_MACHINE
    if accelerator_type in _BUILT_IN_BY_GPU:
        return _BUILT_IN_BY_GPU[accelerator_type].get(count)
    if accelerator_type in ATTACHABLE_GPUS:
        return DEFAULT_N1_MACHINE
    return None


def gvnic(machine_type: str) -> bool:
    return family(machine_type) in _GVNIC_FAMILIES


def arm(machine_type: str) -> bool:
    return family(machine_type) in _ARM_FAMILIES


def default_disk_type(machine_type: str) -> str:
    if machine_type.startswith(_HYPERDISK_ONLY):
        return "hyperdisk-balanced"
    return DEFAULT_DISK_TYPE


def gpu_quota_metric(accelerator_type: str, *, spot: bool) -> str | None:
    """The regional quota metric a GPU type consumes; None for types dlvm has no metric for."""
    metric = _GPU_QUOTA_METRICS.get(accelerator_type)
    if metric is None:
        return None
    return f"PREEMPTIBLE_{metric}" if spot else metric
