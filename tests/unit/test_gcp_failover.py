"""Failover decisions on the error texts Compute Engine and Terraform's google provider print.

The texts are the ones recorded in the project's GCP reference notes: messages quoted in public
issue threads (stockouts, quota errors) and the provider's own wrappers ("Error waiting for
instance to create: ...", "Error creating instance: googleapi: Error 403: ...").
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from gcp_fake import FakeCompute, error_body, running

from dlvm_cluster.providers import load_spec_text
from dlvm_cluster.providers.gcp.failover import (
    FailoverDecision,
    FailoverKind,
    accepts_partial,
    classify_api_error,
    classify_apply_error,
    classify_operation_error,
    exhausted_error,
    failure_error,
    minimum_nodes,
    next_zone,
    remaining_zones,
    suggested_zones,
)

STOCKOUT = (
    "Error: Error waiting for instance to create: The zone 'projects/my-project/zones/us-west1-c'"
    " does not have enough resources available to fulfill the request.  Try a different zone,"
    " or try again later."
)
STOCKOUT_WITH_DETAILS = (
    "Error waiting for instance to create: The zone 'projects/p/zones/us-central1-b' does not "
    "have enough resources available to fulfill the request. '(resource type:compute)'.\n"
    "A n1-standard-4 VM instance with 1 nvidia-tesla-t4 accelerator(s) is currently unavailable "
    "in the us-central1-b zone. Consider trying to create the VM in the us-central1-a, "
    "us-central1-f zones, or try again later.\n"
    'errorInfo: {domain: "compute.googleapis.com", reason: "resource_availability", '
    'metadatas: {attachment: "nvidia-tesla-t4:1", vmType: "n1-standard-4", '
    'zone: "us-central1-b", zonesAvailable: "us-central1-a,us-central1-f"}}'
)
STATE_STOCKOUT = (
    "Error waiting for instance to create: The zone 'projects/p/zones/europe-west4-a' does not "
    "have enough resources available to fulfill the request.  '(resource type:compute)'."
    " (state:STOCKOUT)"
)
REGION_QUOTA = (
    "terraform apply failed: Error waiting for instance to create: Quota 'NVIDIA_T4_GPUS' "
    "exceeded.  Limit: 0.0 in region us-central1.\n"
    "\tmetric name = compute.googleapis.com/nvidia_t4_gpus\n"
    "\tlimit name = NVIDIA-T4-GPUS-per-project-region\n"
    "\tlimit = 0\n"
    "\tdimensions = map[region:us-central1]"
)
INSERT_QUOTA = (
    "Error creating instance: googleapi: Error 403: Quota 'NVIDIA_T4_GPUS' exceeded.  Limit: 0.0"
    " in region us-central1., quotaExceeded"
)
CPU_QUOTA = (
    "Error waiting for instance to create: Quota 'CPUS' exceeded.  Limit: 29.0 in region "
    "europe-west3."
)
GLOBAL_QUOTA = "Quota 'GPUS_ALL_REGIONS' exceeded. Limit: 0.0 globally."
DISK = (
    "Error creating instance: googleapi: Error 400: Invalid value for field "
    "'resource.disks[0].initializeParams.diskSizeGb': '10'. Requested disk size cannot be "
    "smaller than the image size (100 GB), invalid"
)
PERMISSION = (
    "Error creating Network: googleapi: Error 403: Required 'compute.networks.create' "
    "permission for 'projects/p/global/networks/dlvm-t', forbidden"
)


@pytest.mark.parametrize("text", [STOCKOUT, STOCKOUT_WITH_DETAILS, STATE_STOCKOUT])
def test_stockouts_try_the_next_zone(text: str) -> None:
    decision = classify_apply_error(text)
    assert decision.kind is FailoverKind.CAPACITY
    assert decision.try_next_zone
    assert "stockout" in decision.reason


def test_stockout_reason_names_the_zone() -> None:
    assert classify_apply_error(STOCKOUT).reason == (
        "no capacity for this shape in us-west1-c right now (stockout)"
    )


def test_the_zones_the_api_suggests_are_read() -> None:
    decision = classify_apply_error(STOCKOUT_WITH_DETAILS)
    assert decision.zones_hint == ("us-central1-a", "us-central1-f")
    assert suggested_zones(STOCKOUT) == ()


@pytest.mark.parametrize(
    ("text", "metric"),
    [(REGION_QUOTA, "NVIDIA_T4_GPUS"), (INSERT_QUOTA, "NVIDIA_T4_GPUS"), (CPU_QUOTA, "CPUS")],
)
def test_regional_quota_stops_with_a_request_link(text: str, metric: str) -> None:
    decision = classify_apply_error(text)
    assert decision.kind is FailoverKind.QUOTA_REGION
    assert decision.metric == metric
    assert not decision.try_next_zone
    assert "https://console.cloud.google.com/iam-admin/quotas" in decision.hint


def test_global_gpu_quota_stops() -> None:
    decision = classify_apply_error(GLOBAL_QUOTA)
    assert decision.kind is FailoverKind.QUOTA_GLOBAL
    assert decision.metric == "GPUS_ALL_REGIONS"
    assert decision.reason == "GPUS_ALL_REGIONS exceeded across all regions"


def test_zonal_quota_tries_another_zone() -> None:
    text = "Quota 'LOCAL_SSD_TOTAL_GB_PER_VM_FAMILY' exceeded.  Limit: 0.0 in zone us-east1-b."
    assert classify_apply_error(text).kind is FailoverKind.CAPACITY


def test_disk_smaller_than_image_is_fatal_with_the_fix() -> None:
    decision = classify_apply_error(DISK)
    assert decision.kind is FailoverKind.FATAL
    assert "nodes.disk_gb" in decision.hint


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        (
            "Error waiting for instance to create: timeout while waiting for state to become "
            "'DONE' (last state: 'RUNNING', timeout: 2h0m0s)",
            " (2h0m0s)",
        ),
        ("timeout while waiting for state to become 'DONE'", ""),
    ],
)
def test_a_create_past_the_wait_stops_in_its_zone(text: str, limit: str) -> None:
    decision = classify_apply_error(text)
    assert decision.kind is FailoverKind.TIMED_OUT
    assert not decision.try_next_zone  # another zone would start the wait anew
    assert decision.reason.startswith(f"the VMs were not created within the wait limit{limit};")
    assert next_zone(["a", "b"], ["a"], decision) is None
    # Dynamic Workload Scheduler queues a flex-start request for two hours at most.
    assert "up to 2h" in decision.hint


def test_unknown_errors_are_fatal_and_quoted() -> None:
    decision = classify_apply_error(PERMISSION)
    assert decision.kind is FailoverKind.FATAL
    assert decision.reason.startswith("Error creating Network: googleapi: Error 403")


@pytest.fixture
def api() -> Iterator[FakeCompute]:
    with running() as fake:
        yield fake


def insert(api: FakeCompute) -> object:
    from google.cloud import compute_v1

    return api.clients().instances.insert_unary(
        project="p", zone="us-central1-b", instance_resource=compute_v1.Instance(name="t-node-0")
    )


def test_api_quota_error_from_the_client(api: FakeCompute) -> None:
    api.set(
        "projects/p/zones/us-central1-b/instances",
        error_body(403, INSERT_QUOTA.split("Error 403: ")[1], "quotaExceeded", "usageLimits"),
        status=403,
        method="POST",
    )
    from google.api_core import exceptions

    with pytest.raises(exceptions.Forbidden) as caught:
        insert(api)
    decision = classify_api_error(caught.value)
    assert decision.kind is FailoverKind.QUOTA_REGION
    assert decision.metric == "NVIDIA_T4_GPUS"


def test_failed_operation_with_a_stockout_code(api: FakeCompute) -> None:
    api.set(
        "projects/p/zones/us-central1-b/instances",
        {
            "kind": "compute#operation",
            "name": "operation-1",
            "operationType": "insert",
            "status": "DONE",
            "httpErrorStatusCode": 503,
            "error": {
                "errors": [
                    {
                        "code": "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
                        "message": "The zone 'projects/p/zones/us-central1-b' does not have "
                        "enough resources available to fulfill the request.",
                    }
                ]
            },
        },
        method="POST",
    )
    decision = classify_operation_error(insert(api))
    assert decision is not None
    assert decision.kind is FailoverKind.CAPACITY


def test_successful_operation_has_no_decision(api: FakeCompute) -> None:
    api.set(
        "projects/p/zones/us-central1-b/instances",
        {"kind": "compute#operation", "name": "operation-2", "status": "DONE"},
        method="POST",
    )
    assert classify_operation_error(insert(api)) is None


ZONES = ["us-central1-a", "us-central1-b", "us-central1-c", "us-central1-f"]


def test_next_zone_follows_the_spec_order() -> None:
    stockout = classify_apply_error(STOCKOUT)
    assert next_zone(ZONES, ["us-central1-a"], stockout) == "us-central1-b"
    assert next_zone(ZONES, ZONES[:3], stockout) == "us-central1-f"
    assert next_zone(ZONES, ZONES, stockout) is None
    assert next_zone(ZONES, []) == "us-central1-a"


def test_next_zone_prefers_a_zone_the_api_suggested() -> None:
    decision = classify_apply_error(STOCKOUT_WITH_DETAILS)
    assert next_zone(ZONES, ["us-central1-b"], decision) == "us-central1-a"
    # Spec order would say us-central1-c; the API said us-central1-f has room.
    assert next_zone(ZONES, ["us-central1-a", "us-central1-b"], decision) == "us-central1-f"


def test_a_cluster_with_nodes_keeps_its_zone() -> None:
    decision = classify_apply_error(STOCKOUT)
    assert next_zone(ZONES, ["us-central1-a"], decision, keep_zone=True) is None


def test_quota_and_fatal_errors_never_move_zones() -> None:
    for text in (REGION_QUOTA, GLOBAL_QUOTA, DISK, PERMISSION):
        assert next_zone(ZONES, ["us-central1-a"], classify_apply_error(text)) is None


def test_partial_clusters_only_with_min_count() -> None:
    base = (
        "name: t\nprovider: {kind: gcp, project: p, region: us-central1, zones: [us-central1-a],"
        " allowed_ssh_cidrs: [198.51.100.0/24]}\n"
    )
    strict = load_spec_text(base + "nodes: {count: 4}\n", Path("/t.yaml")).spec
    lenient = load_spec_text(base + "nodes: {count: 4, min_count: 2}\n", Path("/t.yaml")).spec
    assert minimum_nodes(strict) == 4 and not accepts_partial(strict, 3)
    assert minimum_nodes(lenient) == 2 and accepts_partial(lenient, 2)
    assert not accepts_partial(lenient, 1)


def test_errors_for_the_user_list_every_attempt() -> None:
    attempts = [
        ("us-central1-a", classify_apply_error(STOCKOUT)),
        ("us-central1-b", FailoverDecision(FailoverKind.CAPACITY, "no capacity (stockout)")),
    ]
    error = exhausted_error(attempts)
    assert "us-central1-a: no capacity" in error.message
    assert "us-central1-b: no capacity" in error.message
    assert "nodes.min_count" in error.hint
    stop = failure_error("us-central1-a", classify_apply_error(REGION_QUOTA))
    assert stop.message == (
        "creating the nodes in us-central1-a failed: NVIDIA_T4_GPUS exceeded in us-central1"
    )
    assert stop.exit_code == 3


# -- preempted while starting, and the zones a stockout says have room ----------------------

PREEMPTED_AT_START = (
    "Error: Error waiting for instance to create: Instance failed to start due to preemption."
)
# As Terraform's google provider writes an operation error: the message, then the
# LocalizedMessage of its errorDetails, then the first help link (no code, no ErrorInfo).
STOCKOUT_AS_TERRAFORM_PRINTS_IT = (
    "Error: Error waiting for instance to create: The zone 'projects/p/zones/us-central1-b' "
    "does not have enough resources available to fulfill the request.  '(resource "
    "type:compute)'.\n\n\n"
    "A a2-highgpu-2g VM instance is currently unavailable in the us-central1-b zone. Consider "
    "trying your request in the us-central1-f, us-central1-c zone(s), which currently has "
    "capacity to accommodate your request.\n\n\n"
    "Troubleshooting documentation\nhttps://cloud.google.com/compute/docs/resource-error\n"
)


def test_a_spot_vm_preempted_as_it_starts_tries_the_next_zone() -> None:
    decision = classify_apply_error(PREEMPTED_AT_START)
    assert decision.kind is FailoverKind.CAPACITY
    assert (
        decision.reason == "a Spot VM was preempted as it started: no Spot capacity there right now"
    )
    assert next_zone(ZONES, ["us-central1-a"], decision) == "us-central1-b"


def test_terraforms_stockout_text_orders_the_remaining_zones() -> None:
    decision = classify_apply_error(STOCKOUT_AS_TERRAFORM_PRINTS_IT)
    assert decision.kind is FailoverKind.CAPACITY
    assert decision.zones_hint == ("us-central1-f", "us-central1-c")
    assert remaining_zones(ZONES, ["us-central1-b"], decision.zones_hint) == [
        "us-central1-f",
        "us-central1-c",
        "us-central1-a",
    ]


def stockout_operation(details: list[dict[str, object]]) -> dict[str, object]:
    """A failed insert as zoneOperations returns it: errors[] with errorDetails[]."""
    return {
        "kind": "compute#operation",
        "name": "operation-3",
        "operationType": "insert",
        "status": "DONE",
        "httpErrorStatusCode": 503,
        "error": {
            "errors": [
                {
                    "code": "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
                    "message": "The zone 'projects/p/zones/us-central1-b' does not have enough "
                    "resources available to fulfill the request.  '(resource type:compute)'.",
                    "errorDetails": details,
                }
            ]
        },
    }


ERROR_INFO = {
    "errorInfo": {
        "reason": "resource_availability",
        "domain": "compute.googleapis.com",
        "metadatas": {
            "vmType": "a2-highgpu-2g",
            "zone": "us-central1-b",
            "zonesAvailable": "us-central1-f,us-central1-c",
        },
    }
}


@pytest.mark.parametrize(
    "details",
    [
        [ERROR_INFO],
        [
            {
                "localizedMessage": {
                    "locale": "en-US",
                    "message": "A a2-highgpu-2g VM instance is currently unavailable in the "
                    "us-central1-b zone. Consider trying your request in the us-central1-f, "
                    "us-central1-c zone(s), which currently has capacity to accommodate your "
                    "request.",
                }
            },
            ERROR_INFO,
            {
                "help": {
                    "links": [
                        {
                            "description": "Troubleshooting documentation",
                            "url": "https://cloud.google.com/compute/docs/resource-error",
                        }
                    ]
                }
            },
        ],
    ],
    ids=["error-info-only", "every-detail"],
)
def test_a_stockout_operation_names_the_zones_with_capacity(
    api: FakeCompute, details: list[dict[str, object]]
) -> None:
    api.set("projects/p/zones/us-central1-b/instances", stockout_operation(details), method="POST")
    decision = classify_operation_error(insert(api))
    assert decision is not None
    assert decision.kind is FailoverKind.CAPACITY
    assert decision.reason == "no capacity for this shape in us-central1-b right now (stockout)"
    assert decision.zones_hint == ("us-central1-f", "us-central1-c")
    assert next_zone(ZONES, ["us-central1-a", "us-central1-b"], decision) == "us-central1-f"


def test_zones_suggested_by_earlier_attempts_still_come_first() -> None:
    zones = [*ZONES, "us-central1-d"]
    # b named d as having room; d then stocked out without naming any.
    later = classify_apply_error(STOCKOUT)
    tried = ["us-central1-b", "us-central1-d"]
    assert next_zone(zones, tried, later, suggested=["us-central1-d", "us-central1-f"]) == (
        "us-central1-f"
    )
