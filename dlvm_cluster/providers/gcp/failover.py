"""What to do when creating the nodes fails: try the next zone, or stop and say why.

Pure functions over the error texts Terraform's google provider prints (it prints each error's
message, not its code) and the codes the Compute Engine API returns:

    capacity      the zone has no room for this shape now (stockout, or a Spot VM preempted
                  as it started): try the next zone, those the API names as having room first
    quota-region  a regional quota is exhausted: every zone of the region shares it, so stop
    quota-global  GPUS_ALL_REGIONS is exhausted: stop
    timed-out     a VM was not created within the wait limit (a flex-start VM waits there for
                  capacity): stop, since another zone would start the wait anew
    fatal         anything else (bad image, permissions, config): retrying elsewhere won't help
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from dlvm_cluster.errors import ProvisionError
from dlvm_cluster.providers.gcp.config import gcp_nodes
from dlvm_cluster.spec.model import ClusterSpec


class FailoverKind(StrEnum):
    CAPACITY = "capacity"
    QUOTA_REGION = "quota-region"
    QUOTA_GLOBAL = "quota-global"
    TIMED_OUT = "timed-out"
    FATAL = "fatal"


@dataclass(frozen=True)
class FailoverDecision:
    """How an error is classified, with what the user should read and do."""

    kind: FailoverKind
    reason: str  # one line, for the progress display and the final message
    hint: str = ""
    metric: str = ""  # the exhausted quota, for quota kinds
    zones_hint: tuple[str, ...] = ()  # zones the API suggested trying instead

    @property
    def try_next_zone(self) -> bool:
        return self.kind is FailoverKind.CAPACITY


# A Spot VM reclaimed before it finished starting: no Spot capacity in that zone right now.
_PREEMPTED_AT_START = "Instance failed to start due to preemption"
# Stockout and its relatives: the zone cannot host the shape right now.
_CAPACITY_PATTERNS = (
    _PREEMPTED_AT_START,
    r"does not have enough resources available",
    r"ZONE_RESOURCE_POOL_EXHAUSTED",
    r"\bSTOCKOUT\b",
    r"resource_availability",
    r"is currently unavailable in the [a-z0-9-]+ zone",
    r"insufficientCapacity",
    # A GPU or machine type the zone does not have: another zone may.
    r"zones/[a-z0-9-]+/(?:acceleratorTypes|machineTypes)/[^'\s]+' was not found",
)
_CAPACITY_CODES = {
    "ZONE_RESOURCE_POOL_EXHAUSTED",
    "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
    "UNSUPPORTED_OPERATION",  # seen when a Spot VM is preempted while being created
    "RESOURCE_NOT_READY",
    "RESOURCE_OPERATION_RATE_EXCEEDED",
    "insufficientCapacity",
}
_QUOTA_CODES = {"QUOTA_EXCEEDED", "quotaExceeded"}
_QUOTA = re.compile(
    r"Quota '([A-Z0-9_]+)' exceeded\.\s*Limit:\s*([0-9.]+)\s+(globally|in region|in zone)"
)
_ZONE = re.compile(r"\b[a-z]+(?:-[a-z]+)+\d+-[a-z]\b")
_DISK_TOO_SMALL = "Requested disk size cannot be smaller than the image size"
# The google provider's words when a create outlasts the resource's create timeout (it then
# drops the VM from its state, though Compute Engine may still hold it).
_TIMED_OUT = re.compile(
    r"timeout while waiting for state to become '\w+'(?: \(last state: '\w*', timeout: ([^)]+)\))?"
)
QUOTA_PAGE = "https://console.cloud.google.com/iam-admin/quotas"


def classify_apply_error(text: str) -> FailoverDecision:
    """Classify the text of a failed `terraform apply` (the diagnostics, as ProvisionError has)."""
    return _classify(text, codes=())


def classify_api_error(error: BaseException) -> FailoverDecision:
    """Classify an exception from google-cloud-compute (an HTTP error or a failed operation)."""
    codes = []
    for item in getattr(error, "errors", None) or ():
        for field in ("reason", "code"):
            value = item.get(field) if isinstance(item, dict) else getattr(item, field, None)
            if value:
                codes.append(str(value))
    return _classify(str(getattr(error, "message", "") or error), codes=codes)


def classify_operation_error(operation: Any) -> FailoverDecision | None:
    """Classify a finished compute_v1.Operation by its error codes; None if it succeeded.

    A stockout's errorDetails carry an ErrorInfo whose `zonesAvailable` metadata lists the
    zones that have room (comma-separated); those are tried first.
    """
    items = list(getattr(getattr(operation, "error", None), "errors", None) or ())
    if not items:
        return None
    codes = [str(getattr(item, "code", "")) for item in items]
    lines, available = [], []
    for item in items:
        lines.append(str(getattr(item, "message", "")))
        for detail in getattr(item, "error_details", None) or ():
            localized = getattr(getattr(detail, "localized_message", None), "message", "")
            if localized:
                lines.append(str(localized))
            metadata = getattr(getattr(detail, "error_info", None), "metadatas", None) or {}
            available.extend(_ZONE.findall(str(metadata.get("zonesAvailable", ""))))
    return _classify("\n".join(lines), codes=codes, available=available)


def _classify(text: str, codes: Iterable[str], available: Sequence[str] = ()) -> FailoverDecision:
    codes = set(codes)
    quota = _QUOTA.search(text)
    if quota or codes & _QUOTA_CODES or "QUOTA_EXCEEDED" in text:
        return _quota_decision(quota, text)
    if codes & _CAPACITY_CODES or any(re.search(p, text) for p in _CAPACITY_PATTERNS):
        hinted = [*available, *suggested_zones(text)]
        return FailoverDecision(
            FailoverKind.CAPACITY,
            reason=_capacity_reason(text),
            hint="dlvm tries the next zone of provider.zones",
            zones_hint=tuple(dict.fromkeys(hinted)),
        )
    timed_out = _TIMED_OUT.search(text)
    if timed_out:
        limit = f" ({timed_out.group(1)})" if timed_out.group(1) else ""
        return FailoverDecision(
            FailoverKind.TIMED_OUT,
            reason=f"the VMs were not created within the wait limit{limit}; a flex-start VM "
            "waits there for capacity",
            hint="give `dlvm up` a longer wait (up to 2h: Dynamic Workload Scheduler keeps a "
            "flex-start request that long at most), try again later, or add zones to "
            "provider.zones; the VMs of this attempt were deleted",
        )
    if _DISK_TOO_SMALL in text:
        return FailoverDecision(
            FailoverKind.FATAL,
            reason="the boot disk is smaller than the image",
            hint="raise nodes.disk_gb to at least the image's size",
        )
    return FailoverDecision(
        FailoverKind.FATAL,
        reason=_first_line(text),
        hint="fix the cause above and run `dlvm up` again: it resumes where it stopped",
    )


def _quota_decision(match: re.Match[str] | None, text: str) -> FailoverDecision:
    metric = match.group(1) if match else ""
    scope = match.group(3) if match else ""
    shown = metric or "a quota"
    if metric == "GPUS_ALL_REGIONS" or scope == "globally":
        return FailoverDecision(
            FailoverKind.QUOTA_GLOBAL,
            reason=f"{shown} exceeded across all regions",
            hint=f"request more {shown} at {QUOTA_PAGE}, or use fewer GPUs",
            metric=metric,
        )
    if scope == "in zone":
        # A zonal limit: another zone of the same region has its own.
        return FailoverDecision(
            FailoverKind.CAPACITY,
            reason=f"{shown} exceeded in this zone",
            hint="dlvm tries the next zone of provider.zones",
            metric=metric,
        )
    region = re.search(r"in region ([a-z0-9-]+)", text)
    where = f" in {region.group(1)}" if region else ""
    return FailoverDecision(
        FailoverKind.QUOTA_REGION,
        reason=f"{shown} exceeded{where}",
        hint=f"request more {shown} quota{where} at {QUOTA_PAGE} (every zone of the region "
        "shares it), or use fewer or smaller nodes",
        metric=metric,
    )


def _capacity_reason(text: str) -> str:
    zone = re.search(r"zones/([a-z0-9-]+)'", text) or re.search(
        r"unavailable in the ([a-z0-9-]+) zone", text
    )
    where = f" in {zone.group(1)}" if zone else ""
    if _PREEMPTED_AT_START in text:
        return f"a Spot VM was preempted as it started{where}: no Spot capacity there right now"
    return f"no capacity for this shape{where} right now (stockout)"


def suggested_zones(text: str) -> tuple[str, ...]:
    """Zones the API named as having capacity (zonesAvailable, or "Consider trying ...")."""
    found: list[str] = []
    for marker in (r"zonesAvailable", r"Consider trying"):
        for match in re.finditer(marker, text):
            window = text[match.end() : match.end() + 300]
            window = re.split(r"[.\n}]\s", window, maxsplit=1)[0]
            found.extend(zone for zone in _ZONE.findall(window) if zone not in found)
    return tuple(found)


def next_zone(
    zones: Sequence[str],
    tried: Iterable[str],
    decision: FailoverDecision | None = None,
    *,
    keep_zone: bool = False,
    suggested: Sequence[str] = (),
) -> str | None:
    """The next zone to try, or None: the first of `remaining_zones`.

    `keep_zone`: the cluster already has working nodes in its zone. Moving would replace them
    all (the zone is part of every VM's identity), so a stockout while growing stops instead.
    """
    if keep_zone or (decision is not None and not decision.try_next_zone):
        return None
    hinted = [*(decision.zones_hint if decision else ()), *suggested]
    remaining = remaining_zones(zones, tried, hinted)
    return remaining[0] if remaining else None


def remaining_zones(
    zones: Sequence[str], tried: Iterable[str], suggested: Sequence[str] = ()
) -> list[str]:
    """The zones of `zones` not yet tried: those the API said have capacity first (in the
    order it gave, latest attempt first), then the rest in the spec's order."""
    done = set(tried)
    left = [zone for zone in zones if zone not in done]
    first = [zone for zone in dict.fromkeys(suggested) if zone in left]
    return first + [zone for zone in left if zone not in first]


def minimum_nodes(spec: ClusterSpec) -> int:
    """Fewest nodes `up` accepts: all of them unless the spec sets nodes.min_count."""
    return gcp_nodes(spec).min_count or gcp_nodes(spec).count


def accepts_partial(spec: ClusterSpec, created: int) -> bool:
    return created >= minimum_nodes(spec)


def failure_error(zone: str, decision: FailoverDecision) -> ProvisionError:
    """The error `up` raises when a decision says stop."""
    return ProvisionError(
        f"creating the nodes in {zone} failed: {decision.reason}", hint=decision.hint
    )


def exhausted_error(attempts: Sequence[tuple[str, FailoverDecision]]) -> ProvisionError:
    """The error `up` raises when every zone was tried; lists each attempt."""
    tried = "; ".join(f"{zone}: {decision.reason}" for zone, decision in attempts)
    return ProvisionError(
        f"no zone could host the cluster ({tried})",
        hint="try again later, add zones to provider.zones, set nodes.min_count to accept fewer "
        "nodes, or switch between Spot and on-demand (their capacity differs)",
    )


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:300]
    return "unknown error"
