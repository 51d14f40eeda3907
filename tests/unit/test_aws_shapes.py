"""dlvm's offline table of EC2 GPU types against EC2's own answer (DescribeInstanceTypes, as
the moto package ships AWS's data), and the EFA interface layout the module attaches."""

from __future__ import annotations

import pytest
from aws_moto import moto_clients

from dlvm_cluster.providers.aws import shapes
from dlvm_cluster.providers.aws.gpu_network import job_environment, plan_line


def test_every_row_is_what_ec2_says_of_the_type(monkeypatch: pytest.MonkeyPatch) -> None:
    with moto_clients(monkeypatch) as clients:
        answer = clients.ec2.describe_instance_types(InstanceTypes=sorted(shapes.SHAPES))
    described = {item["InstanceType"]: item for item in answer["InstanceTypes"]}
    assert set(described) == set(shapes.SHAPES)
    for kind, shape in shapes.SHAPES.items():
        item = described[kind]
        (gpu,) = item["GpuInfo"]["Gpus"]
        network = item["NetworkInfo"]
        efa = (network.get("EfaInfo") or {}).get("MaximumEfaInterfaces", 0)
        assert (shape.vcpus, shape.gpu, shape.gpus, shape.efa_interfaces) == (
            item["VCpuInfo"]["DefaultVCpus"],
            gpu["Name"],
            gpu["Count"],
            efa,
        ), kind
        assert shape.capacity_blocks == ("capacity-block" in item["SupportedUsageClasses"]), kind
        # Every EFA interface of the layout goes on a network card the type has.
        cards = network["MaximumNetworkCards"]
        assert all(slot.network_card < cards for slot in shapes.efa_layout(efa)), kind


@pytest.mark.parametrize(
    ("kind", "efa"),
    [
        ("p4d.24xlarge", 4),
        ("p5.48xlarge", 32),
        ("p5e.48xlarge", 32),
        ("p5en.48xlarge", 16),
        ("p6-b200.48xlarge", 8),
        ("g6.12xlarge", 1),
        ("g6.xlarge", 0),
    ],
)
def test_efa_counts_per_type(kind: str, efa: int) -> None:
    assert shapes.efa_interfaces(kind) == efa


def test_layout_keeps_the_primary_interface_and_fills_one_card_after_another() -> None:
    layout = [(slot.network_card, slot.device_index) for slot in shapes.efa_layout(32)]
    # Card 0 keeps its ENA primary at device 0: its EFA-only interface is device 1; every
    # other card carries one EFA-only interface at device 0.
    assert layout[0] == (0, 1)
    assert layout[1:] == [(card, 0) for card in range(1, 32)]
    assert len(set(layout)) == 32
    assert shapes.efa_layout(0) == []


def test_quota_classes() -> None:
    assert shapes.quota_class("p5.48xlarge") == "p"
    assert shapes.quota_class("p6-b200.48xlarge") == "p"
    assert shapes.quota_class("g6.xlarge") == "g"
    assert shapes.quota_class("vt1.3xlarge") == "g"
    assert shapes.quota_class("m7i.large") == "standard"
    assert shapes.quota_class("trn1.32xlarge") is None
    assert shapes.ON_DEMAND_QUOTAS["p"][0] == "L-417A185B"
    assert shapes.SPOT_QUOTAS["p"][0] == "L-7212CCBC"


def test_jobs_get_efa_settings_only_where_there_is_efa() -> None:
    assert job_environment("p5.48xlarge") == {"FI_PROVIDER": "efa", "FI_EFA_USE_DEVICE_RDMA": "1"}
    assert job_environment("g6.12xlarge") == {"FI_PROVIDER": "efa"}
    assert job_environment("g6.xlarge") == {}
    assert "32 EFA-only interfaces per node on 32 network cards" in str(
        plan_line("p5.48xlarge", True)
    )
    assert plan_line("g6.xlarge", False) is None
