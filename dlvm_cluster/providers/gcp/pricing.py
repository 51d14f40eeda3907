"""Hourly prices for `plan` and `status`: a small dated table, and None where it has no row.

Source: the public SkyPilot catalog (skypilot-org/skypilot-catalog, catalogs/v7/gcp/vms.csv,
the copy at commit 6f65ab58, a mid-2026 snapshot), which lists each host machine type and each
GPU count as separate rows in USD per hour, on-demand and Spot. Only us-central1 rows were
copied, and us-east4's for the A3 shapes; the T4 and V100 rows are the per-GPU figures of the
same catalog. H100 (A3 High) and H100 Mega (A3 Mega) are the catalog's 8-GPU rows divided by 8.
Its us-central1 on-demand H100 row is half of us-east4's, while every other A3 figure (hosts,
H100 Mega) is the same in the two regions: the us-east4 on-demand figure is used for both (the
Spot figures, which do differ by region, are each region's own). Rows whose numbers looked
inconsistent there (A100 80GB) were left out rather than guessed; the catalog has no H200 (A3
Ultra) GPU row and no A4 (B200) row at all. Prices exclude disks, network egress and
discounts; Spot prices change up to once a day. For a bill, use the Cloud Billing Catalog API or
the pricing pages.

A3 Ultra (a3-ultragpu-8g, 8 x H200) is priced whole, from a second public source: the Hugging
Face dataset tanod/cloud-gpu-list-prices, snapshot of 2026-10-13, whose rows name the Cloud
Billing Catalog API as their source and give each GPU's share of the whole VM's price (basis
"instance_share"), on-demand and Spot, for us-central1 and us-east4 among others; the VM's
price is that share times its 8 GPUs. A newer SkyPilot catalog (v8) has A3 Ultra rows too, but
they disagree with it (us-central1: $86.76/h on-demand, host plus H200 rows) and are not used:
that copy is undated and its H200 rows in other regions contradict themselves (Spot above
on-demand), while the dataset is dated and names Google's catalog. A4 (a4-highgpu-8g, B200)
has no price in any public source found (the v8 catalog lists it at $0), so it shows none.

Flex-start and reservation-bound VMs are not priced: flex-start has its own price (a discount
on on-demand that is neither the on-demand nor the Spot figure, and the catalog has no column
for it), and reservation-bound VMs are billed through their reservation. Showing the Spot or
on-demand figure for them would be a guess, so `cluster_price` says it does not know. A
standard VM that consumes a reservation is shown at the on-demand price, which is what the
reservation bills.
"""

from __future__ import annotations

from dataclasses import dataclass

from dlvm_cluster.providers.gcp.plan import GcpPlan

PRICES_AS_OF = "mid-2026"
PRICE_SOURCE = "SkyPilot catalog v7 (gcp/vms.csv)"
WHOLE_VM_PRICES_AS_OF = "2026-10-13"
WHOLE_VM_PRICE_SOURCE = "Cloud Billing Catalog snapshot (tanod/cloud-gpu-list-prices)"
# The provisioning models the table has prices for (see the module docstring for the others).
PRICED_MODELS = frozenset({"standard", "spot"})

# (region, machine type) -> (on-demand, Spot) USD per hour, host only (GPUs priced separately).
HOST_PRICES: dict[tuple[str, str], tuple[float, float]] = {
    ("us-central1", "a2-highgpu-1g"): (0.73948, 0.29576),
    ("us-central1", "a2-highgpu-2g"): (1.47895, 0.59151),
    ("us-central1", "a2-highgpu-4g"): (2.95791, 1.18302),
    ("us-central1", "a2-highgpu-8g"): (5.91582, 2.36604),
    ("us-central1", "a2-megagpu-16g"): (8.79698, 3.51864),
    ("us-central1", "g2-standard-12"): (0.44038, 0.17621),
    ("us-central1", "g2-standard-16"): (0.58717, 0.23494),
    ("us-central1", "g2-standard-24"): (0.88075, 0.35242),
    ("us-central1", "g2-standard-32"): (1.17434, 0.46989),
    ("us-central1", "n1-standard-2"): (0.095, 0.021),
    ("us-central1", "n1-standard-8"): (0.38, 0.08399),
    ("us-central1", "n1-standard-16"): (0.76, 0.16798),
    ("us-central1", "n1-standard-32"): (1.51999, 0.33596),
    ("us-central1", "n1-standard-64"): (3.03998, 0.67192),
    ("us-central1", "n1-standard-96"): (4.55998, 1.00788),
    ("us-central1", "a3-highgpu-1g"): (1.18251, 0.27193),
    ("us-central1", "a3-highgpu-2g"): (2.36502, 0.54387),
    ("us-central1", "a3-highgpu-4g"): (4.73003, 1.08774),
    ("us-central1", "a3-highgpu-8g"): (9.46006, 2.17547),
    ("us-central1", "a3-megagpu-8g"): (9.46006, 2.17547),
    ("us-east4", "a3-highgpu-1g"): (1.18251, 0.21294),
    ("us-east4", "a3-highgpu-2g"): (2.36502, 0.42588),
    ("us-east4", "a3-highgpu-4g"): (4.73003, 0.85176),
    ("us-east4", "a3-highgpu-8g"): (9.46006, 1.70352),
    ("us-east4", "a3-megagpu-8g"): (9.46006, 1.70352),
}

# (region, GPU type) -> (on-demand, Spot) USD per hour for one GPU (the catalog's multi-GPU rows
# are exact multiples of these).
GPU_PRICES: dict[tuple[str, str], tuple[float, float]] = {
    ("us-central1", "nvidia-tesla-a100"): (2.93391, 1.1472),
    ("us-central1", "nvidia-l4"): (0.56004, 0.2231),
    ("us-central1", "nvidia-tesla-p100"): (1.46, 0.584),
    ("us-central1", "nvidia-tesla-t4"): (0.35, 0.14),
    ("us-central1", "nvidia-tesla-v100"): (2.48, 0.992),
    ("us-central1", "nvidia-h100-80gb"): (9.79655, 2.253),
    ("us-central1", "nvidia-h100-mega-80gb"): (10.34428, 2.3791),
    ("us-east4", "nvidia-h100-80gb"): (9.79655, 1.7632),
    ("us-east4", "nvidia-h100-mega-80gb"): (10.34428, 1.8619),
}

# (region, machine type) -> (on-demand, Spot) USD per hour for the whole VM, GPUs included, for
# shapes whose source prices the VM as one unit. tanod/cloud-gpu-list-prices (Hugging Face
# dataset, snapshot 2026-10-13, "Google Cloud Billing Catalog API"): a3-ultragpu-8g, 8 GPUs,
# od_per_gpu_h / spot_per_gpu_h on the "instance_share" basis, times the 8 GPUs.
WHOLE_VM_PRICES: dict[tuple[str, str], tuple[float, float]] = {
    ("us-central1", "a3-ultragpu-8g"): (8 * 10.4365, 8 * 6.2607),
    ("us-east4", "a3-ultragpu-8g"): (8 * 10.4365, 8 * 5.6357),
}


@dataclass(frozen=True)
class PriceEstimate:
    """The hourly price of one node and of the cluster, both pricing models side by side."""

    region: str
    machine_type: str
    gpu_type: str | None
    gpus_per_node: int
    nodes: int
    node_on_demand: float
    node_spot: float
    spot: bool  # which of the two the spec asks for
    as_of: str = PRICES_AS_OF
    source: str = PRICE_SOURCE

    @property
    def cluster_on_demand(self) -> float:
        return self.node_on_demand * self.nodes

    @property
    def cluster_spot(self) -> float:
        return self.node_spot * self.nodes

    @property
    def cluster_hourly(self) -> float:
        """What this cluster costs per hour under the spec's pricing model."""
        return self.cluster_spot if self.spot else self.cluster_on_demand

    def summary(self) -> str:
        model = "Spot" if self.spot else "on-demand"
        other = (
            f"on-demand ${self.cluster_on_demand:.2f}/h"
            if self.spot
            else f"Spot ${self.cluster_spot:.2f}/h"
        )
        return (
            f"${self.cluster_hourly:.2f}/h for {self.nodes} x {self.machine_type} ({model}; "
            f"{other}); {self.source} prices of {self.as_of}, VMs and GPUs only"
        )


def node_price(
    region: str, machine_type: str, gpu_type: str | None, gpus: int
) -> tuple[float, float] | None:
    """(on-demand, Spot) per hour for one node, or None when the table lacks a part of it."""
    whole = WHOLE_VM_PRICES.get((region, machine_type))
    if whole is not None:
        return (round(whole[0], 5), round(whole[1], 5))
    host = HOST_PRICES.get((region, machine_type))
    if host is None:
        return None
    if not gpus:
        return host
    if gpu_type is None:
        return None
    gpu = GPU_PRICES.get((region, gpu_type))
    if gpu is None:
        return None
    return (round(host[0] + gpus * gpu[0], 5), round(host[1] + gpus * gpu[1], 5))


def cluster_price(plan: GcpPlan, count: int | None = None) -> PriceEstimate | None:
    """The hourly price of the cluster `plan` describes (with `count` nodes), or None if unknown."""
    provider, shape = plan.config, plan.shape
    if shape.gpus is None or plan.nodes.provisioning_model not in PRICED_MODELS:
        return None
    price = node_price(provider.region, shape.machine_type, shape.gpu_type, shape.gpus)
    if price is None:
        return None
    whole_vm = (provider.region, shape.machine_type) in WHOLE_VM_PRICES
    return PriceEstimate(
        region=provider.region,
        machine_type=shape.machine_type,
        gpu_type=shape.gpu_type,
        gpus_per_node=shape.gpus,
        nodes=plan.nodes.count if count is None else count,
        node_on_demand=price[0],
        node_spot=price[1],
        spot=plan.nodes.provisioning_model == "spot",
        as_of=WHOLE_VM_PRICES_AS_OF if whole_vm else PRICES_AS_OF,
        source=WHOLE_VM_PRICE_SOURCE if whole_vm else PRICE_SOURCE,
    )


# Persistent disk capacity, USD per GB-month in us-central1 (Compute Engine's disk pricing
# page, mid-2026); hyperdisk-balanced also bills provisioned IOPS and throughput, so it is not
# priced. A stopped VM bills only its disk.
DISK_PRICES_PER_GB_MONTH: dict[tuple[str, str], float] = {
    ("us-central1", "pd-standard"): 0.04,
    ("us-central1", "pd-balanced"): 0.10,
    ("us-central1", "pd-ssd"): 0.17,
}
HOURS_PER_MONTH = 730.0


def disk_hourly(plan: GcpPlan) -> float | None:
    """One node's boot disk per hour (billed running or stopped), or None if unknown."""
    from dlvm_cluster.providers.gcp.shapes import default_disk_type

    disk_type = plan.nodes.disk_type or default_disk_type(plan.shape.machine_type)
    per_gb = DISK_PRICES_PER_GB_MONTH.get((plan.config.region, disk_type))
    if per_gb is None:
        return None
    return plan.nodes.disk_gb * per_gb / HOURS_PER_MONTH
