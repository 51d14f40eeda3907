"""What `plan` and `up` say of the nodes' shape from the spec alone: capacity Google rarely
has on demand, a GPU network the image cannot run, GPUs the default image's driver may not
drive. Warnings, not refusals: each may be right on a particular project."""

from __future__ import annotations

from dlvm_cluster.providers.gcp import shapes
from dlvm_cluster.providers.gcp.plan import GcpPlan
from dlvm_cluster.providers.gcp.tfvars import (
    ACCELERATOR_IMAGE_PROJECT,
    DLVM_IMAGE_PROJECT,
    image_ref,
    node_image,
)

# A3 High and A3 Mega are sold through reservations, flex-start and Spot; on-demand capacity of
# them is rarely there (AI Hypercomputer's consumption options).
RARELY_ON_DEMAND = ("a3-highgpu-8g", "a3-megagpu-8g")
# GPUs older than Turing: the -nvidia-580 images carry NVIDIA's open kernel modules, which
# drive Turing and later only.
PRE_TURING_GPUS = ("nvidia-tesla-v100", "nvidia-tesla-p100", "nvidia-tesla-p4")


def shape_warnings(plan: GcpPlan) -> list[str]:
    nodes, shape = plan.nodes, plan.shape
    machine = shapes.base_machine_type(shape.machine_type)
    warnings = []
    if (
        machine in RARELY_ON_DEMAND
        and nodes.provisioning_model == "standard"
        and nodes.reservation is None
    ):
        warnings.append(
            f"on-demand capacity of {machine} is rarely available: use nodes.provisioning spot "
            "or flex-start (with max_run_hours), or consume a reservation (nodes.reservation)"
        )
    network = plan.network
    if network is not None and network.stack == "tcpx" and not tcpx_image(nodes.image):
        warnings.append(
            "GPUDirect-TCPX needs Google's TCPX kernel (linux-gcp-tcpx) or Container-Optimized "
            "OS, which Deep Learning VM images do not have: the nodes' boot script checks the "
            "kernel and, on any other, NCCL uses plain sockets over the primary NIC (a fraction "
            "of the GPU NICs' bandwidth); set nodes.image to an image built with that kernel"
        )
    image = node_image(plan)
    if nodes.image is None and image.project == ACCELERATOR_IMAGE_PROJECT:
        warnings.append(
            f"{machine} nodes boot Google's accelerator image {image.name} (Ubuntu 24.04, "
            "NVIDIA 580, the RDMA stack), as Google's reference clusters of this shape do: it "
            "has no PyTorch or other framework; install yours in `setup`, or set nodes.image "
            "to a Deep Learning VM family"
        )
    if shape.gpu_type in PRE_TURING_GPUS and image.name.endswith("-nvidia-580"):
        warnings.append(
            f"{shape.gpu_type} is older than Turing, and the image family "
            f"{image.name} carries NVIDIA's 580 open kernel modules, which "
            "may not drive it: set nodes.image to a family with an older driver (e.g. "
            "common-cu124-ubuntu-2204-nvidia-550) if nvidia-smi finds no GPU"
        )
    return warnings


def tcpx_image(image: str | None) -> bool:
    """Whether the image may carry a TCPX kernel: any image the user chose outside the Deep
    Learning VM project (the boot script checks the kernel itself)."""
    return image is not None and image_ref(image).project != DLVM_IMAGE_PROJECT
