"""Prices asked of AWS: the Price List API's answer (stubbed: moto has no Price List API; the
request and answer are checked against the SDK's model of GetProducts) and the Spot price
history of EC2 (moto); a node's hourly rates running and stopped (its root volume's price from
the Price List), which `status` adds up."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_moto import moto_clients
from botocore.stub import ANY, Stubber
from harness import REPO

from dlvm_cluster.providers.aws.pricing import (
    HOURS_PER_MONTH,
    NodePrice,
    hourly_rates,
    node_price,
    on_demand_price,
    price_line,
    spot_price,
)
from dlvm_cluster.providers.base import HourlyRates


def product(usd: str) -> str:
    """One product of GetProducts' PriceList, in the shape the Price List API documents."""
    return json.dumps(
        {
            "product": {"attributes": {"instanceType": "p5.48xlarge", "regionCode": "us-east-1"}},
            "terms": {
                "OnDemand": {
                    "ABC.JRTCKXETXF": {
                        "priceDimensions": {
                            "ABC.JRTCKXETXF.6YS6EN2CT7": {
                                "unit": "Hrs",
                                "pricePerUnit": {"USD": usd},
                            }
                        }
                    }
                }
            },
        }
    )


def test_on_demand_price_from_the_price_list(monkeypatch: pytest.MonkeyPatch) -> None:
    with moto_clients(monkeypatch) as clients, Stubber(clients.pricing) as stub:
        stub.add_response(
            "get_products",
            {"PriceList": [product("0.0000000000"), product("55.0400000000")]},
            {"ServiceCode": "AmazonEC2", "Filters": ANY, "MaxResults": 10},
        )
        assert on_demand_price(clients.pricing, "us-east-1", "p5.48xlarge") == 55.04
        stub.add_response("get_products", {"PriceList": []}, None)
        assert node_price(clients, "standard", "p5.48xlarge", "us-east-1a") is None
        assert node_price(clients, "capacity-block", "p5.48xlarge", "us-east-1a") is None


def test_spot_price_of_the_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    with moto_clients(monkeypatch) as clients:
        price = spot_price(clients, "g6.xlarge", "us-east-1a")
        assert price is not None and price > 0
        found = node_price(clients, "spot", "g6.xlarge", "us-east-1a")
        assert found == NodePrice(price, "Spot price in us-east-1a now")


def test_price_lines() -> None:
    line = price_line(NodePrice(2.5, "On-Demand, AWS Price List"), 4, "g6.12xlarge", "standard")
    assert line.startswith("price: 4 x g6.12xlarge at $2.5000/h = $10.00/h")
    assert "up front" in price_line(None, 2, "p5.48xlarge", "capacity-block")
    assert "gave no spot price" in price_line(None, 2, "g6.xlarge", "spot")


def volume_product(usd: str) -> str:
    """One EBS volume product of GetProducts' PriceList: USD per GB-month."""
    return json.dumps(
        {
            "product": {
                "productFamily": "Storage",
                "attributes": {"volumeApiName": "gp3", "regionCode": "us-west-2"},
            },
            "terms": {
                "OnDemand": {
                    "DEF.JRTCKXETXF": {
                        "priceDimensions": {
                            "DEF.JRTCKXETXF.6YS6EN2CT7": {
                                "unit": "GB-Mo",
                                "pricePerUnit": {"USD": usd},
                            }
                        }
                    }
                }
            },
        }
    )


def example_provider(
    name: str, clients: object, monkeypatch: pytest.MonkeyPatch
) -> tuple[Any, Any]:
    """The aws provider bound to examples/NAME, asking AWS through `clients`."""
    from dlvm_cluster.providers import load_spec
    from dlvm_cluster.providers.aws import provider
    from dlvm_cluster.state import ClusterState

    spec = load_spec(REPO / "examples" / name).spec
    monkeypatch.setattr(provider, "_optional_clients", lambda spec: clients)
    return provider.Ec2(ClusterState(spec.name, Path("/nowhere")), spec), spec


def test_a_spot_node_costs_the_zones_spot_price_and_its_volume(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`status` adds up what an aws cluster has cost, as for gcp: the instance's price and
    its root volume's while running, the volume alone while stopped."""
    from dlvm_cluster.orchestrate.cluster.lifecycle import _cost_notes

    with moto_clients(monkeypatch, "us-west-2") as clients, Stubber(clients.pricing) as stub:
        for _ in range(2):  # asked by status's total, then by plan's cost notes
            stub.add_response(
                "get_products",
                {"PriceList": [volume_product("0.0800000000")]},
                {"ServiceCode": "AmazonEC2", "Filters": ANY, "MaxResults": 10},
            )
        engine, spec = example_provider("aws-g6-spot.yaml", clients, monkeypatch)
        spot = spot_price(clients, "g6.12xlarge", "us-west-2a")
        rates = engine.hourly_rates()
        notes = _cost_notes(spec, engine)
        stub.assert_no_pending_responses()
    assert spot is not None and rates is not None
    disk = 200 * 0.08 / HOURS_PER_MONTH  # gp3, disk_gb 200
    assert rates.stopped == pytest.approx(disk)
    assert rates.running == pytest.approx(spot + disk)
    assert notes[0].startswith(f"stopped: ${4 * disk:.2f}/h for the disks of 4 node(s)")


def test_an_on_demand_node_costs_the_price_list_and_a_block_has_no_hourly_price(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with moto_clients(monkeypatch) as clients, Stubber(clients.pricing) as stub:
        stub.add_response("get_products", {"PriceList": [product("55.04")]}, None)
        stub.add_response("get_products", {"PriceList": [volume_product("0.08")]}, None)
        rates = hourly_rates(clients, "standard", "p5.48xlarge", "us-east-1a", 730, "gp3")
        assert rates == HourlyRates(running=pytest.approx(55.04 + 0.08), stopped=0.08)
        block = hourly_rates(clients, "capacity-block", "p5.48xlarge", "us-east-1a", 8, "gp3")
        assert block is None
        stub.add_response("get_products", {"PriceList": [product("55.04")]}, None)
        stub.add_response("get_products", {"PriceList": []}, None)  # no volume price: no total
        assert hourly_rates(clients, "standard", "p5.48xlarge", "us-east-1a", 8, "gp3") is None
        stub.assert_no_pending_responses()
