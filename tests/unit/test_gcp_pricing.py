"""The dated price table and the hourly price of a cluster; unknown prices are None."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import REPO

from dlvm_cluster.providers import load_spec, load_spec_text
from dlvm_cluster.providers.gcp import pricing
from dlvm_cluster.providers.gcp.plan import gcp_plan
from dlvm_cluster.providers.gcp.pricing import (
    GPU_PRICES,
    HOST_PRICES,
    WHOLE_VM_PRICES,
    cluster_price,
    node_price,
)
from dlvm_cluster.spec.model import ClusterSpec
from dlvm_cluster.state import ClusterState


def spec_of(nodes: str, region: str = "us-central1") -> ClusterSpec:
    text = (
        f"name: t\nprovider: {{kind: gcp, project: p, region: {region}, zones: [{region}-a],"
        " allowed_ssh_cidrs: [198.51.100.0/24]}\nnodes: " + nodes + "\n"
    )
    return load_spec_text(text, Path("/t.yaml")).spec


def test_a100_example_costs_host_plus_gpus() -> None:
    estimate = cluster_price(gcp_plan(load_spec(REPO / "examples" / "gcp-a100-torchrun.yaml").spec))
    assert estimate is not None
    assert (estimate.machine_type, estimate.gpu_type, estimate.gpus_per_node) == (
        "a2-highgpu-2g",
        "nvidia-tesla-a100",
        2,
    )
    assert estimate.node_on_demand == pytest.approx(1.47895 + 2 * 2.93391)
    assert estimate.node_spot == pytest.approx(0.59151 + 2 * 1.1472)
    assert not estimate.spot
    assert estimate.cluster_hourly == pytest.approx(2 * (1.47895 + 2 * 2.93391))


def test_spot_l4_example_is_priced_as_spot() -> None:
    estimate = cluster_price(
        gcp_plan(load_spec(REPO / "examples" / "gcp-spot-l4-horovod.yaml").spec)
    )
    assert estimate is not None
    assert estimate.spot
    assert estimate.cluster_hourly == pytest.approx(4 * (0.17621 + 0.2231))
    assert estimate.cluster_on_demand == pytest.approx(4 * (0.44038 + 0.56004))
    summary = estimate.summary()
    assert summary.startswith("$1.60/h for 4 x g2-standard-12 (Spot; on-demand $4.00/h)")
    assert pricing.PRICES_AS_OF in summary


def test_count_overrides_the_spec_for_scale_and_status() -> None:
    estimate = cluster_price(
        gcp_plan(
            spec_of(
                "{count: 2, machine_type: n1-standard-8, "
                "accelerator: {type: nvidia-tesla-t4, count: 1}}"
            )
        ),
        count=5,
    )
    assert estimate is not None
    assert estimate.nodes == 5
    assert estimate.cluster_on_demand == pytest.approx(5 * (0.38 + 0.35))


@pytest.mark.parametrize(
    ("nodes", "region"),
    [
        ("{count: 1}", "us-central1"),  # n2-standard-8: no row in the table
        ("{count: 1, machine_type: a3-ultragpu-8g, spot: true}", "europe-west4"),  # not copied
        ("{count: 1, machine_type: a3-highgpu-8g, spot: true}", "europe-west4"),  # not copied
        ("{count: 1, machine_type: a2-highgpu-1g}", "europe-west4"),  # region not copied
        (
            "{count: 1, machine_type: a4-highgpu-8g, spot: true}",
            "us-central1",
        ),  # no public B200 price found
        # A3 Ultra has a whole-VM row, but neither flex-start nor reservation-bound is priced.
        (
            "{count: 2, machine_type: a3-ultragpu-8g, provisioning: flex-start, max_run_hours: 8}",
            "us-central1",
        ),
        (
            "{count: 2, machine_type: a3-ultragpu-8g, provisioning: reservation-bound, "
            "reservation: h200-pool}",
            "us-central1",
        ),
        # A2 has a row, but flex-start has a price of its own and reservation-bound VMs are
        # billed through their reservation: neither the on-demand nor the Spot figure.
        (
            "{count: 1, machine_type: a2-highgpu-1g, provisioning: flex-start, max_run_hours: 8}",
            "us-central1",
        ),
        (
            "{count: 1, machine_type: a2-highgpu-1g, provisioning: reservation-bound, "
            "reservation: a100-pool}",
            "us-central1",
        ),
    ],
)
def test_unknown_prices_are_none_never_guessed(nodes: str, region: str) -> None:
    assert cluster_price(gcp_plan(spec_of(nodes, region))) is None


@pytest.mark.parametrize(
    ("nodes", "spot"),
    [
        ("{count: 1, machine_type: a2-highgpu-1g, provisioning: spot}", True),
        ("{count: 1, machine_type: a2-highgpu-1g, provisioning: standard}", False),
        # Consuming a reservation bills the on-demand price (through the reservation).
        ("{count: 1, machine_type: a2-highgpu-1g, reservation: a100-pool}", False),
    ],
)
def test_the_provisioning_model_picks_the_column(nodes: str, spot: bool) -> None:
    estimate = cluster_price(gcp_plan(spec_of(nodes)))
    assert estimate is not None
    assert estimate.spot is spot


def test_node_price_parts() -> None:
    assert (
        node_price("us-central1", "n1-standard-16", None, 0)
        == HOST_PRICES[("us-central1", "n1-standard-16")]
    )
    assert node_price("us-central1", "n1-standard-16", "nvidia-tesla-k80", 1) is None
    assert node_price("us-central1", "no-such-type", None, 0) is None


def test_table_is_dated_sourced_and_sane() -> None:
    assert pricing.__doc__ and "skypilot-catalog" in pricing.__doc__
    assert "2026" in pricing.PRICES_AS_OF
    assert "tanod/cloud-gpu-list-prices" in pricing.__doc__
    assert "2026" in pricing.WHOLE_VM_PRICES_AS_OF
    for on_demand, spot in [
        *HOST_PRICES.values(),
        *GPU_PRICES.values(),
        *WHOLE_VM_PRICES.values(),
    ]:
        assert 0 < spot < on_demand


def test_a_stopped_node_costs_its_disk_and_a_running_one_the_disk_too() -> None:
    from dlvm_cluster.orchestrate.cluster.lifecycle import _cost_notes
    from dlvm_cluster.providers.gcp.provider import ComputeEngine

    spec = load_spec(REPO / "examples" / "gcp-a100-torchrun.yaml").spec
    disk = 200 * 0.10 / 730  # pd-balanced, 200 GB
    assert pricing.disk_hourly(gcp_plan(spec)) == pytest.approx(disk)
    engine = ComputeEngine(ClusterState(spec.name, Path("/nowhere")), spec)
    rates = engine.hourly_rates()
    assert rates is not None
    assert rates.stopped == pytest.approx(disk)
    assert rates.running == pytest.approx(1.47895 + 2 * 2.93391 + disk)
    notes = _cost_notes(spec, engine)
    assert notes[0].startswith(f"stopped: ${2 * disk:.2f}/h for the disks of 2 node(s)")
    assert notes[1].startswith("autostop: ")


def test_spend_counts_open_intervals_up_to_now() -> None:
    from dlvm_cluster.orchestrate.cluster.power import node_hours

    record = {
        "since": {"node-0": ["running", 0.0], "node-1": ["stopped", 1800.0]},
        "running_hours": 2.0,
        "stopped_hours": 1.0,
    }
    assert node_hours(record, now=3600.0) == pytest.approx((3.0, 1.5))


@pytest.mark.parametrize(
    ("machine", "region", "on_demand", "spot"),
    [
        # Host + 8 GPUs, the catalog's 8-GPU rows: 9.46006 + 78.37241 (us-east4's H100 row,
        # which us-central1 shares); Spot 2.17547 + 18.024.
        ("a3-highgpu-8g", "us-central1", 9.46006 + 8 * 9.79655, 2.17547 + 8 * 2.253),
        ("a3-highgpu-8g", "us-east4", 9.46006 + 8 * 9.79655, 1.70352 + 8 * 1.7632),
        ("a3-highgpu-2g", "us-central1", 2.36502 + 2 * 9.79655, 0.54387 + 2 * 2.253),
        ("a3-megagpu-8g", "us-central1", 9.46006 + 82.75421, 2.17547 + 19.0328),
        ("a3-megagpu-8g", "us-east4", 9.46006 + 82.75424, 1.70352 + 14.8952),
    ],
)
def test_h100_shapes_are_priced_from_the_catalog(
    machine: str, region: str, on_demand: float, spot: float
) -> None:
    estimate = cluster_price(
        gcp_plan(spec_of(f"{{count: 2, machine_type: {machine}, spot: true}}", region))
    )
    assert estimate is not None
    assert estimate.node_on_demand == pytest.approx(on_demand, abs=1e-3)
    assert estimate.node_spot == pytest.approx(spot, abs=1e-3)
    assert estimate.cluster_hourly == pytest.approx(2 * spot, abs=1e-3)


@pytest.mark.parametrize(
    ("region", "on_demand", "spot"),
    [
        # tanod/cloud-gpu-list-prices, 2026-10-13: per-GPU shares of the whole VM, times 8.
        ("us-central1", 8 * 10.4365, 8 * 6.2607),
        ("us-east4", 8 * 10.4365, 8 * 5.6357),
    ],
)
def test_h200_a3_ultra_is_priced_whole_with_its_own_source(
    region: str, on_demand: float, spot: float
) -> None:
    estimate = cluster_price(
        gcp_plan(spec_of("{count: 2, machine_type: a3-ultragpu-8g, spot: true}", region))
    )
    assert estimate is not None
    assert (estimate.gpu_type, estimate.gpus_per_node) == ("nvidia-h200-141gb", 8)
    assert estimate.node_on_demand == pytest.approx(on_demand, abs=1e-3)
    assert estimate.node_spot == pytest.approx(spot, abs=1e-3)
    assert estimate.cluster_hourly == pytest.approx(2 * spot, abs=1e-3)
    # Its summary names the source and date of its own row, not the catalog's.
    summary = estimate.summary()
    assert pricing.WHOLE_VM_PRICE_SOURCE in summary
    assert pricing.WHOLE_VM_PRICES_AS_OF in summary
    assert pricing.PRICE_SOURCE not in summary


def test_a3_ultra_standard_on_a_reservation_is_shown_on_demand() -> None:
    estimate = cluster_price(
        gcp_plan(spec_of("{count: 1, machine_type: a3-ultragpu-8g, reservation: h200-pool}"))
    )
    assert estimate is not None
    assert not estimate.spot
    assert estimate.cluster_hourly == pytest.approx(8 * 10.4365, abs=1e-3)
