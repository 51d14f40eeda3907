"""What the nodes cost per hour, asked of AWS when `plan` or `status` runs: the On-Demand price
from the AWS Price List API (Linux, shared tenancy) and the Spot price of the zone from EC2's
Spot price history. Nothing is kept in a table that goes stale; where AWS cannot be asked (no
credentials, no pricing:GetProducts permission) the line says so.

A Capacity Block is paid up front when it is bought, so its instances have no hourly price;
instances in an On-Demand Capacity Reservation are billed at the On-Demand price.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dlvm_cluster.providers.aws.api import AwsClients, call


@dataclass(frozen=True)
class NodePrice:
    hourly: float  # USD per node-hour
    source: str  # where the figure comes from, as the line says


def _filter(field: str, value: str) -> dict[str, str]:
    return {"Type": "TERM_MATCH", "Field": field, "Value": value}


def on_demand_price(pricing: Any, region: str, kind: str) -> float | None:
    """USD per hour of one On-Demand Linux instance of `kind` in `region` (None: no price)."""
    answer = call(
        "reading the On-Demand price",
        lambda: pricing.get_products(
            ServiceCode="AmazonEC2",
            Filters=[
                _filter("instanceType", kind),
                _filter("regionCode", region),
                _filter("operatingSystem", "Linux"),
                _filter("tenancy", "Shared"),
                _filter("preInstalledSw", "NA"),
                _filter("capacitystatus", "Used"),
                _filter("licenseModel", "No License required"),
            ],
            MaxResults=10,
        ),
    )
    for text in answer.get("PriceList", []):
        product = json.loads(text) if isinstance(text, str) else text
        for term in product.get("terms", {}).get("OnDemand", {}).values():
            for dimension in term.get("priceDimensions", {}).values():
                usd = dimension.get("pricePerUnit", {}).get("USD")
                if usd is not None and float(usd) > 0:
                    return float(usd)
    return None


def spot_price(clients: AwsClients, kind: str, zone: str) -> float | None:
    """USD per hour of one Linux Spot instance of `kind` in `zone` now (None: no price)."""
    answer = call(
        "reading the Spot price",
        lambda: clients.ec2.describe_spot_price_history(
            InstanceTypes=[kind],
            ProductDescriptions=["Linux/UNIX"],
            AvailabilityZone=zone,
            StartTime=datetime.now(UTC),
        ),
    )
    prices = [
        float(item["SpotPrice"])
        for item in answer.get("SpotPriceHistory", [])
        if item.get("AvailabilityZone", zone) == zone
    ]
    return min(prices) if prices else None


def node_price(clients: AwsClients, provisioning: str, kind: str, zone: str) -> NodePrice | None:
    """One node's hourly price for the provisioning, or None where it has no hourly price or
    AWS gave none."""
    if provisioning == "capacity-block":
        return None
    if provisioning == "spot":
        price = spot_price(clients, kind, zone)
        return NodePrice(price, f"Spot price in {zone} now") if price is not None else None
    price = on_demand_price(clients.pricing, clients.region, kind)
    return NodePrice(price, "On-Demand, AWS Price List") if price is not None else None


def price_line(price: NodePrice | None, nodes: int, kind: str, provisioning: str) -> str:
    if provisioning == "capacity-block":
        return "price: paid up front when the Capacity Block was bought; no hourly price"
    if price is None:
        return f"price: AWS gave no {provisioning} price for {kind}"
    return (
        f"price: {nodes} x {kind} at ${price.hourly:.4f}/h = ${nodes * price.hourly:.2f}/h "
        f"({price.source}; EBS volumes and traffic extra)"
    )
