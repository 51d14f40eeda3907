"""What the nodes cost per hour, asked of AWS when `plan` or `status` runs: the On-Demand price
from the AWS Price List API (Linux, shared tenancy) and the Spot price of the zone from EC2's
Spot price history. Nothing is kept in a table that goes stale; where AWS cannot be asked (no
credentials, no pricing:GetProducts permission) the line says so.

A Capacity Block is paid up front when it is bought, so its instances have no hourly price;
instances in an On-Demand Capacity Reservation are billed at the On-Demand price. A node's root
volume is priced from the Price List too (USD per GB-month, spread over an average month), so
that `status` can add up what the cluster has cost while running and while stopped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dlvm_cluster.providers.aws.api import AwsClients, call
from dlvm_cluster.providers.base import HourlyRates

HOURS_PER_MONTH = 730.0  # an average month (8760 / 12): how a GB-month price becomes hourly


@dataclass(frozen=True)
class NodePrice:
    hourly: float  # USD per node-hour
    source: str  # where the figure comes from, as the line says


def _filter(field: str, value: str) -> dict[str, str]:
    return {"Type": "TERM_MATCH", "Field": field, "Value": value}


def _listed_price(pricing: Any, what: str, filters: list[dict[str, str]]) -> float | None:
    """The first non-zero On-Demand USD price of the EC2 products matching `filters`."""
    answer = call(
        f"reading the {what} price",
        lambda: pricing.get_products(ServiceCode="AmazonEC2", Filters=filters, MaxResults=10),
    )
    for text in answer.get("PriceList", []):
        product = json.loads(text) if isinstance(text, str) else text
        for term in product.get("terms", {}).get("OnDemand", {}).values():
            for dimension in term.get("priceDimensions", {}).values():
                usd = dimension.get("pricePerUnit", {}).get("USD")
                if usd is not None and float(usd) > 0:
                    return float(usd)
    return None


def on_demand_price(pricing: Any, region: str, kind: str) -> float | None:
    """USD per hour of one On-Demand Linux instance of `kind` in `region` (None: no price)."""
    return _listed_price(
        pricing,
        "On-Demand",
        [
            _filter("instanceType", kind),
            _filter("regionCode", region),
            _filter("operatingSystem", "Linux"),
            _filter("tenancy", "Shared"),
            _filter("preInstalledSw", "NA"),
            _filter("capacitystatus", "Used"),
            _filter("licenseModel", "No License required"),
        ],
    )


def volume_price(pricing: Any, region: str, volume_type: str) -> float | None:
    """USD per GB-month of an EBS volume of `volume_type` (gp3, ...) in `region` (None: no
    price). Provisioned IOPS and throughput above a type's baseline are not counted."""
    return _listed_price(
        pricing,
        f"EBS {volume_type}",
        [
            _filter("productFamily", "Storage"),
            _filter("volumeApiName", volume_type),
            _filter("regionCode", region),
        ],
    )


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


def hourly_rates(
    clients: AwsClients, provisioning: str, kind: str, zone: str, disk_gb: int, disk_type: str
) -> HourlyRates | None:
    """One node per hour: running (the instance and its root volume) and stopped (the volume
    alone); None where AWS gave no price, or for a Capacity Block (paid up front)."""
    instance = node_price(clients, provisioning, kind, zone)
    if instance is None:
        return None
    per_gb_month = volume_price(clients.pricing, clients.region, disk_type)
    if per_gb_month is None:
        return None
    disk = per_gb_month * disk_gb / HOURS_PER_MONTH
    return HourlyRates(running=instance.hourly + disk, stopped=disk)
