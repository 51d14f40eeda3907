"""Prices asked of AWS: the Price List API's answer (stubbed: moto has no Price List API; the
request and answer are checked against the SDK's model of GetProducts) and the Spot price
history of EC2 (moto)."""

from __future__ import annotations

import json

import pytest
from aws_moto import moto_clients
from botocore.stub import ANY, Stubber

from dlvm_cluster.providers.aws.pricing import (
    NodePrice,
    node_price,
    on_demand_price,
    price_line,
    spot_price,
)


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
