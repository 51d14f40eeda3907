"""Preflight against a fake Compute Engine API (real google-cloud-compute, loopback HTTP)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from gcp_fake import FakeCompute, running

from dlvm_cluster.errors import ProvisionError
from dlvm_cluster.providers import load_spec_text
from dlvm_cluster.providers.base import Check, Reach
from dlvm_cluster.providers.gcp.credentials import compute_clients, default_credentials
from dlvm_cluster.providers.gcp.plan import ReservedCapacity, gcp_plan
from dlvm_cluster.providers.gcp.preflight import preflight, spec_warnings
from dlvm_cluster.providers.gcp.tfvars import (
    DEFAULT_IMAGE_FAMILY,
    DLVM_IMAGE_PROJECT,
)
from dlvm_cluster.spec.model import ClusterSpec
from dlvm_cluster.state import ClusterState

P = "p"
REGION = "us-central1"
ZONES = ["us-central1-a", "us-central1-b", "us-central1-c", "us-central1-f"]
IMAGE = "pytorch-2-9-cu129-ubuntu-2204-nvidia-580-v20261101"
REGION_QUOTAS = {
    "CPUS": (2400.0, 0.0),
    "A2_CPUS": (2400.0, 0.0),
    "G2_CPUS": (2400.0, 0.0),
    "NVIDIA_T4_GPUS": (8.0, 0.0),
    "PREEMPTIBLE_NVIDIA_T4_GPUS": (0.0, 0.0),
    "NVIDIA_L4_GPUS": (8.0, 0.0),
    "PREEMPTIBLE_NVIDIA_L4_GPUS": (16.0, 2.0),
    "NVIDIA_A100_GPUS": (16.0, 0.0),
    "NVIDIA_RTX_PRO_6000_GPUS": (8.0, 0.0),
}


def spec_of(nodes: str, *, zones: list[str] | None = None, extra: str = "") -> ClusterSpec:
    text = (
        "name: t\nprovider:\n  kind: gcp\n  project: p\n  region: us-central1\n"
        f"  zones: [{', '.join(zones or ZONES[:2])}]\n"
        "  allowed_ssh_cidrs: [198.51.100.0/24]\n" + extra + "nodes:\n" + nodes
    )
    return load_spec_text(text, Path("/nowhere/t.yaml")).spec


T4 = "  count: 2\n  machine_type: n1-standard-8\n  accelerator: {type: nvidia-tesla-t4, count: 1}\n"
L4_SPOT = "  count: 4\n  machine_type: g2-standard-12\n  spot: true\n"
A100 = "  count: 2\n  machine_type: a2-highgpu-2g\n"


@pytest.fixture
def gcloud_on_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A program named gcloud on PATH (preflight only looks for it)."""
    tool = tmp_path / "gcloud"
    tool.write_text("#!/bin/sh\nexit 1\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")


@pytest.fixture
def api() -> Iterator[FakeCompute]:
    with running() as fake:
        fake.project(P, {"GPUS_ALL_REGIONS": (32.0, 0.0)})
        fake.region(P, REGION, ZONES, REGION_QUOTAS)
        for zone in ZONES:
            fake.accelerators(
                P, zone, {"nvidia-tesla-t4": 4, "nvidia-l4": 8, "nvidia-tesla-a100": 16}
            )
            fake.machine_type(P, zone, "n1-standard-8")
            fake.machine_type(P, zone, "g2-standard-12", ("nvidia-l4", 1))
            fake.machine_type(P, zone, "a2-highgpu-2g", ("nvidia-tesla-a100", 2))
            fake.machine_type(P, zone, "g4-standard-96", ("nvidia-rtx-pro-6000", 2))
        fake.dlvm_image_family(DEFAULT_IMAGE_FAMILY, IMAGE, 100)
        fake.accelerator_image_families()
        yield fake


def failure(spec: ClusterSpec, api: FakeCompute, **kwargs: int) -> ProvisionError:
    with pytest.raises(ProvisionError) as caught:
        preflight(spec, api.clients(), **kwargs)
    assert caught.value.hint
    return caught.value


def test_healthy_project_passes(api: FakeCompute) -> None:
    report = preflight(spec_of(T4, zones=ZONES), api.clients())
    assert report.zones == tuple(ZONES)
    assert report.gpus_per_node == 1
    assert report.image == IMAGE
    assert report.image_disk_gb == 100
    assert report.warnings == ()
    for zone in ZONES:
        assert api.calls(f"/zones/{zone}/acceleratorTypes") == 1


def test_built_in_gpus_come_from_the_machine_type(api: FakeCompute) -> None:
    report = preflight(spec_of(A100), api.clients())
    assert report.gpus_per_node == 2
    assert api.calls("/acceleratorTypes") == 0


def test_spot_uses_the_preemptible_quota(api: FakeCompute) -> None:
    assert preflight(spec_of(L4_SPOT), api.clients()).gpus_per_node == 1
    api.region(P, REGION, ZONES, {**REGION_QUOTAS, "PREEMPTIBLE_NVIDIA_L4_GPUS": (4.0, 2.0)})
    error = failure(spec_of(L4_SPOT), api)
    assert "PREEMPTIBLE_NVIDIA_L4_GPUS" in error.message
    assert "4 GPUs with 2 in use; this cluster needs 4 more" in error.message


def test_spot_without_preemptible_quota_uses_the_standard_one(api: FakeCompute) -> None:
    api.region(P, REGION, ZONES, {**REGION_QUOTAS, "NVIDIA_T4_GPUS": (8.0, 7.0)})
    spot_t4 = T4 + "  spot: true\n"
    error = failure(spec_of(spot_t4), api)
    assert "quota NVIDIA_T4_GPUS in us-central1" in error.message


def test_regional_quota_exceeded(api: FakeCompute) -> None:
    api.region(P, REGION, ZONES, {**REGION_QUOTAS, "NVIDIA_A100_GPUS": (8.0, 6.0)})
    error = failure(spec_of(A100), api)
    assert error.message == (
        "quota NVIDIA_A100_GPUS in us-central1 is 8 GPUs with 6 in use; this cluster needs 4 more"
    )
    assert "https://console.cloud.google.com/iam-admin/quotas?project=p" in error.hint


def test_nodes_that_already_exist_hold_their_quota(api: FakeCompute) -> None:
    api.region(P, REGION, ZONES, {**REGION_QUOTAS, "NVIDIA_A100_GPUS": (8.0, 6.0)})
    # Growing from 2 to 3 nodes of 2 GPUs needs 2 more, and 2 are free.
    preflight(spec_of(A100), api.clients(), count=3, existing_nodes=2)


def test_family_cpu_quota_is_checked_before_the_networks_exist(api: FakeCompute) -> None:
    # The fake's machine types have 12 vCPUs: 2 a2 nodes need 24 of A2_CPUS.
    api.region(P, REGION, ZONES, {**REGION_QUOTAS, "A2_CPUS": (32.0, 12.0)})
    error = failure(spec_of(A100), api)
    assert error.message == (
        "quota A2_CPUS in us-central1 is 32 vCPUs with 12 in use; this cluster needs 24 more"
    )
    api.region(P, REGION, ZONES, {**REGION_QUOTAS, "CPUS": (16.0, 0.0)})
    assert "quota CPUS in us-central1 is 16 vCPUs" in failure(spec_of(T4), api).message


def test_addresses_and_boot_disks_are_checked(api: FakeCompute) -> None:
    api.region(P, REGION, ZONES, {**REGION_QUOTAS, "IN_USE_ADDRESSES": (8.0, 7.0)})
    assert (
        "quota IN_USE_ADDRESSES in us-central1 is 8 addresses" in failure(spec_of(T4), api).message
    )
    api.region(P, REGION, ZONES, {**REGION_QUOTAS, "SSD_TOTAL_GB": (300.0, 0.0)})
    # Two 200 GB pd-balanced boot disks.
    assert failure(spec_of(T4), api).message == (
        "quota SSD_TOTAL_GB in us-central1 is 300 GB with 0 in use; this cluster needs 400 more"
    )


def test_flex_start_takes_preemptible_gpu_quota_only(api: FakeCompute) -> None:
    # A100 has standard quota to spare but no preemptible quota: flex-start VMs consume the
    # latter (Google), so standard quota does not make up for it as it does for Spot.
    api.region(P, REGION, ZONES, {**REGION_QUOTAS, "PREEMPTIBLE_NVIDIA_A100_GPUS": (0.0, 0.0)})
    flex = A100 + "  provisioning: flex-start\n  max_run_hours: 8\n"
    assert "quota PREEMPTIBLE_NVIDIA_A100_GPUS in us-central1 is 0 GPUs" in (
        failure(spec_of(flex), api).message
    )
    preflight(spec_of(A100 + "  spot: true\n"), api.clients())


def test_all_regions_quota_exceeded(api: FakeCompute) -> None:
    api.project(P, {"GPUS_ALL_REGIONS": (0.0, 0.0)})
    error = failure(spec_of(T4), api)
    assert "GPUS_ALL_REGIONS across all regions is 0 GPUs" in error.message


def test_quota_dlvm_cannot_read_is_a_warning(api: FakeCompute) -> None:
    api.machine_type(P, ZONES[0], "a3-highgpu-8g", ("nvidia-h100-80gb", 8))
    api.project(P, {})
    spec = spec_of("  count: 1\n  machine_type: a3-highgpu-8g\n", zones=ZONES[:1])
    report = preflight(spec, api.clients())
    assert report.gpus_per_node == 8
    assert any("NVIDIA_H100_GPUS" in warning for warning in report.warnings)
    assert any("GPUS_ALL_REGIONS" in warning for warning in report.warnings)


def test_a_zone_without_the_gpu_type_is_skipped_with_a_warning(api: FakeCompute) -> None:
    api.accelerators(P, "us-central1-b", {"nvidia-l4": 8})
    report = preflight(spec_of(T4), api.clients())
    assert report.zones == ("us-central1-a",)
    assert (
        "GPU type nvidia-tesla-t4 is not offered in zone us-central1-b (offered there: "
        "nvidia-l4): that zone is skipped"
    ) in report.warnings


def test_gpu_type_missing_in_every_zone_names_the_zones_that_have_it(api: FakeCompute) -> None:
    api.accelerators(P, "us-central1-b", {"nvidia-l4": 8})
    error = failure(spec_of(T4, zones=["us-central1-b"]), api)
    assert error.message == (
        "GPU type nvidia-tesla-t4 is not offered in zone us-central1-b (offered there: nvidia-l4)"
    )
    assert "remove us-central1-b from provider.zones" in error.hint
    assert "us-central1-a, us-central1-c, us-central1-f" in error.hint


def test_gpu_type_nowhere_in_the_region(api: FakeCompute) -> None:
    spec = spec_of(
        "  count: 1\n  machine_type: n1-standard-8\n"
        "  accelerator: {type: nvidia-tesla-p4, count: 1}\n"
    )
    error = failure(spec, api)
    assert "nvidia-tesla-p4 is not offered in zone us-central1-a" in error.message
    assert "no zone of us-central1 offers nvidia-tesla-p4" in error.hint


def test_too_many_gpus_per_vm(api: FakeCompute) -> None:
    # The spec refuses counts N1 never takes; the zone's own limit may be lower still.
    for zone in ZONES:
        api.accelerators(P, zone, {"nvidia-tesla-t4": 2})
    spec = spec_of(
        "  count: 1\n  machine_type: n1-standard-8\n"
        "  accelerator: {type: nvidia-tesla-t4, count: 4}\n"
    )
    error = failure(spec, api)
    assert "allows at most 2 x nvidia-tesla-t4 per VM" in error.message


def test_machine_type_missing_in_a_zone(api: FakeCompute) -> None:
    api.routes.pop(
        ("GET", f"/compute/v1/projects/{P}/zones/us-central1-b/machineTypes/g2-standard-12")
    )
    assert preflight(spec_of(L4_SPOT), api.clients()).zones == ("us-central1-a",)
    error = failure(spec_of(L4_SPOT, zones=["us-central1-b"]), api)
    assert error.message == "machine type g2-standard-12 is not offered in zone us-central1-b"
    assert "us-central1-a, us-central1-c, us-central1-f" in error.hint


def test_image_family_missing(api: FakeCompute) -> None:
    error = failure(spec_of(T4 + "  image: pytorch-0-1-cu01-nope\n"), api)
    assert "image family 'pytorch-0-1-cu01-nope' does not exist" in error.message
    assert "gcloud compute images list --project deeplearning-platform-release" in error.hint


def test_disk_smaller_than_the_image(api: FakeCompute) -> None:
    api.image_family(DLVM_IMAGE_PROJECT, DEFAULT_IMAGE_FAMILY, IMAGE, 250)
    error = failure(spec_of(T4), api)
    assert "needs 250 GB" in error.message
    assert error.hint == "set nodes.disk_gb to at least 250"


SUCCESSOR = "pytorch-2-9-cu129-ubuntu-2204-nvidia-580-v20261201"


def test_deprecated_image_warns_and_names_its_successor(api: FakeCompute) -> None:
    api.dlvm_image_family(
        DEFAULT_IMAGE_FAMILY, IMAGE, 100, deprecated="DEPRECATED", replacement=SUCCESSOR
    )
    [warning] = preflight(spec_of(T4), api.clients()).warnings
    assert warning.startswith(f"image {IMAGE} is DEPRECATED: it gets no more updates")
    assert f"its successor is projects/{DLVM_IMAGE_PROJECT}/global/images/{SUCCESSOR}" in warning


@pytest.mark.parametrize("state", ["OBSOLETE", "DELETED"])
def test_obsolete_or_deleted_image_fails_and_names_its_successor(
    api: FakeCompute, state: str
) -> None:
    api.dlvm_image_family(DEFAULT_IMAGE_FAMILY, IMAGE, 100, deprecated=state, replacement=SUCCESSOR)
    error = failure(spec_of(T4), api)
    assert error.message == f"image {IMAGE} is {state}: Compute Engine creates no VMs from it"
    assert error.hint.startswith(
        f"its successor is projects/{DLVM_IMAGE_PROJECT}/global/images/{SUCCESSOR}: "
        "set nodes.image to it"
    )


def test_deprecated_image_without_a_successor_points_to_the_families(api: FakeCompute) -> None:
    api.dlvm_image_family(DEFAULT_IMAGE_FAMILY, IMAGE, 100, deprecated="OBSOLETE")
    assert failure(spec_of(T4), api).hint.startswith(
        "set nodes.image to a current family; list the families with: gcloud compute images"
    )


def test_image_without_gvnic_warns_for_nodes_that_get_a_gvnic(api: FakeCompute) -> None:
    api.dlvm_image_family(DEFAULT_IMAGE_FAMILY, IMAGE, 100, features=("UEFI_COMPATIBLE",))
    [warning] = preflight(spec_of(A100), api.clients()).warnings
    assert warning.startswith(
        f"image {IMAGE} does not list the GVNIC guest OS feature, but a2-highgpu-2g nodes get "
        "a gVNIC network interface"
    )
    # N1 nodes keep the default virtio NIC: nothing to say.
    assert preflight(spec_of(T4), api.clients()).warnings == ()


A4X = "  count: 2\n  machine_type: a4x-highgpu-4g\n  spot: true\n"
ARM_IMAGE = "projects/my-images/global/images/family/pytorch-arm64"


def test_a4x_nodes_on_an_image_that_is_not_arm64_warn(api: FakeCompute) -> None:
    for zone in ZONES:
        api.machine_type(P, zone, "a4x-highgpu-4g", ("nvidia-gb200", 4))
    # A Deep Learning VM family is x86: plan says so from the spec alone, preflight from the
    # image.
    dlvm = spec_of(A4X + f"  image: {DEFAULT_IMAGE_FAMILY}\n")
    assert spec_warnings(gcp_plan(dlvm)) == [
        f"a4x-highgpu-4g has Arm CPUs, but the image ({DEFAULT_IMAGE_FAMILY}) is a Deep "
        "Learning VM family, built for x86: set nodes.image to an Arm64 image"
    ]
    warnings = preflight(dlvm, api.clients()).warnings
    assert f"image {IMAGE} is not an Arm64 image (X86_64), but a4x-highgpu-4g has Arm CPUs" in (
        "\n".join(warnings)
    )
    # An Arm64 image: nothing about the architecture, from the spec or from the API.
    api.image_family("my-images", "pytorch-arm64", "pytorch-arm64-v1", 100)
    body = api.routes[("GET", "/compute/v1/projects/my-images/global/images/family/pytorch-arm64")]
    body[0][1].update(architecture="ARM64", guestOsFeatures=[{"type": "GVNIC"}])
    arm = spec_of(A4X + f"  image: {ARM_IMAGE}\n")
    assert spec_warnings(gcp_plan(arm)) == []
    assert not [w for w in preflight(arm, api.clients()).warnings if "Arm" in w]
    # x86 machine types never hear of it.
    assert not [w for w in preflight(spec_of(A100), api.clients()).warnings if "Arm" in w]


def test_a4x_nodes_boot_googles_arm64_accelerator_image_by_default(api: FakeCompute) -> None:
    for zone in ZONES:
        api.machine_type(P, zone, "a4x-highgpu-4g", ("nvidia-gb200", 4))
    report = preflight(spec_of(A4X), api.clients())
    assert report.image == "ubuntu-accelerator-2404-arm64-with-nvidia-580-v20260522"
    assert not [w for w in report.warnings if "Arm" in w]
    [framework] = [w for w in report.warnings if "accelerator image" in w]
    assert "has no PyTorch or other framework; install yours in `setup`" in framework


def test_project_asking_for_os_login_says_how_to_use_it(api: FakeCompute) -> None:
    api.project_metadata(P, {"enable-oslogin": "FALSE", "startup-script": "true"})
    assert preflight(spec_of(T4), api.clients()).warnings == ()
    api.project_metadata(P, {"enable-oslogin": "true"})
    [warning] = preflight(spec_of(T4), api.clients()).warnings
    assert warning.startswith("project p sets enable-oslogin=TRUE in its metadata")
    assert "set provider.os_login: true" in warning
    assert preflight(spec_of(T4, extra="  os_login: true\n"), api.clients()).warnings == ()


# -- organization policies -------------------------------------------------------------------


def test_an_org_policy_forbidding_external_ips_asks_for_private_nodes(
    api: FakeCompute, gcloud_on_path: None
) -> None:
    api.org_policy(P, "compute.vmExternalIpAccess", {"rules": [{"denyAll": True}]})
    error = failure(spec_of(T4), api)
    assert error.message == (
        "an organization policy (compute.vmExternalIpAccess) forbids external IP addresses on "
        "the VMs of project p"
    )
    assert "set provider.public_ip: false" in error.hint
    # An allow-list names existing VMs: new ones are not on it.
    allow = {"rules": [{"values": {"allowedValues": ["projects/p/zones/z/instances/bastion"]}}]}
    api.org_policy(P, "compute.vmExternalIpAccess", allow)
    assert failure(spec_of(T4), api).message == error.message
    private = "  public_ip: false\n"
    [unused] = preflight(spec_of(T4, extra=private), api.clients()).warnings
    assert unused.startswith("allowed_ssh_cidrs is not used with public_ip: false")


def test_an_org_policy_requiring_os_login_turns_it_on(api: FakeCompute) -> None:
    assert preflight(spec_of(T4), api.clients()).os_login_required is False
    api.org_policy(P, "compute.requireOsLogin", {"rules": [{"enforce": True}]})
    assert preflight(spec_of(T4), api.clients()).os_login_required is True
    error = failure(spec_of(T4, extra="  os_login: false\n"), api)
    assert "requires OS Login on project p, but provider.os_login is false" in error.message


def test_org_policies_on_images_locations_and_account_creation(api: FakeCompute) -> None:
    api.org_policy(
        P,
        "compute.trustedImageProjects",
        {"rules": [{"values": {"allowedValues": ["projects/my-images"]}}]},
    )
    error = failure(spec_of(T4), api)
    assert "does not trust images of project deeplearning-platform-release" in error.message
    api.org_policy(
        P,
        "compute.trustedImageProjects",
        {"rules": [{"values": {"allowedValues": ["is:projects/deeplearning-platform-release"]}}]},
    )
    api.org_policy(
        P, "gcp.resourceLocations", {"rules": [{"values": {"allowedValues": ["europe-west4"]}}]}
    )
    assert "does not allow resources in us-central1" in failure(spec_of(T4), api).message
    api.org_policy(
        P, "gcp.resourceLocations", {"rules": [{"values": {"allowedValues": ["in:us-locations"]}}]}
    )
    [warning] = preflight(spec_of(T4), api.clients()).warnings
    assert "value groups dlvm cannot expand" in warning
    api.org_policy(P, "gcp.resourceLocations", {"rules": [{"allowAll": True}]})
    api.org_policy(P, "iam.disableServiceAccountCreation", {"rules": [{"enforce": True}]})
    error = failure(spec_of(T4), api)
    assert "forbids making service accounts" in error.message
    api.service_account(TRAINER)
    preflight(spec_of(T4, extra=ACCOUNT), api.clients())  # an existing account needs no creation


def test_unreadable_org_policies_are_a_warning(api: FakeCompute) -> None:
    api.org_policy(P, "compute.vmExternalIpAccess", None)
    api.org_policy(P, "compute.requireOsLogin", None)
    [warning] = preflight(spec_of(T4), api.clients()).warnings
    assert warning.startswith(
        "cannot read the organization policies compute.vmExternalIpAccess, "
        "compute.requireOsLogin (orgpolicy.policies.get"
    )


def test_private_nodes_need_gcloud_for_the_tunnel(
    api: FakeCompute, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    error = failure(spec_of(T4, extra="  public_ip: false\n"), api)
    assert error.message == (
        "provider.public_ip is false: dlvm reaches the nodes through IAP TCP forwarding with "
        "`gcloud compute start-iap-tunnel`, and gcloud is not on PATH"
    )
    assert "roles/iap.tunnelResourceAccessor" in error.hint
    preflight(spec_of(T4), api.clients())  # nodes with external addresses need no gcloud


G4 = "  count: 2\n  machine_type: g4-standard-96\n"


def test_g4_gpus_and_quota_come_from_the_api(api: FakeCompute) -> None:
    report = preflight(spec_of(G4), api.clients())
    assert report.gpus_per_node == 2
    assert report.warnings == ()
    api.region(P, REGION, ZONES, {**REGION_QUOTAS, "NVIDIA_RTX_PRO_6000_GPUS": (8.0, 6.0)})
    assert failure(spec_of(G4), api).message == (
        "quota NVIDIA_RTX_PRO_6000_GPUS in us-central1 is 8 GPUs with 6 in use; this cluster "
        "needs 4 more"
    )


def test_gpus_the_api_reports_for_a_family_dlvm_renders_as_cpu_are_refused(
    api: FakeCompute,
) -> None:
    # A family newer than dlvm's table: the API says it has GPUs, so a CPU render (no driver,
    # live migration) would be refused by Compute Engine after the network exists.
    for zone in ZONES[:2]:
        api.machine_type(P, zone, "g9-standard-48", ("nvidia-rtx-pro-6000", 1))
    error = failure(spec_of("  count: 1\n  machine_type: g9-standard-48\n"), api)
    assert error.message.startswith(
        "g9-standard-48 carries 1 x nvidia-rtx-pro-6000 (Compute Engine API), but dlvm does "
        "not know the g9 family as a GPU family"
    )
    assert error.hint.startswith(
        "use a machine type of a family dlvm knows (a2, a3, a4, a4x, g2, g4"
    )


def test_zone_down_is_skipped_and_all_down_fails(api: FakeCompute) -> None:
    api.zone(P, "us-central1-a", REGION, status="DOWN")
    report = preflight(spec_of(T4), api.clients())
    assert report.zones == ("us-central1-b",)
    assert any("us-central1-a is DOWN" in w for w in report.warnings)
    api.zone(P, "us-central1-b", REGION, status="DOWN")
    assert "none of the zones" in failure(spec_of(T4), api).message


def test_zone_that_the_region_does_not_have(api: FakeCompute) -> None:
    api.region(P, REGION, ZONES[:3], REGION_QUOTAS)
    error = failure(spec_of(T4, zones=["us-central1-a", "us-central1-f"]), api)
    assert error.message == "zone us-central1-f does not exist in region us-central1"


def test_project_and_region_errors(api: FakeCompute) -> None:
    api.routes.pop(("GET", f"/compute/v1/projects/{P}/regions/{REGION}"))
    assert "region 'us-central1' does not exist" in failure(spec_of(T4), api).message
    api.routes.pop(("GET", f"/compute/v1/projects/{P}"))
    assert "project 'p' does not exist" in failure(spec_of(T4), api).message
    api.error(
        f"projects/{P}",
        403,
        "Compute Engine API has not been used in project p before or it is disabled.",
        "accessNotConfigured",
        "usageLimits",
    )
    error = failure(spec_of(T4), api)
    assert error.message.startswith("permission denied reading project p")
    assert "gcloud services enable compute.googleapis.com --project p" in error.hint


def test_unreachable_api_is_a_clear_error() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    from google.auth.credentials import AnonymousCredentials

    credentials = AnonymousCredentials()  # type: ignore[no-untyped-call]
    clients = compute_clients(credentials, api_endpoint=f"http://127.0.0.1:{port}")
    with pytest.raises(ProvisionError, match="cannot reach the Compute Engine API"):
        preflight(spec_of(T4), clients)


def test_missing_credentials_say_how_to_log_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent.json"))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))
    with pytest.raises(ProvisionError) as caught:
        default_credentials()
    assert "no Google Cloud credentials found" in caught.value.message
    assert "gcloud auth application-default login" in caught.value.hint


def test_warnings_from_the_spec_alone() -> None:
    spec = spec_of(
        "  count: 1\n  machine_type: e2-standard-8\n",
        extra="  compact_placement: true\n  public_ip: false\n",
    )
    warnings = spec_warnings(gcp_plan(spec))
    assert any("compact placement may not be available for e2-standard-8" in w for w in warnings)
    # dlvm makes the network, with Cloud NAT: nothing to warn about egress.
    assert not any("Cloud NAT" in w for w in warnings)
    assert any(
        w.startswith("allowed_ssh_cidrs is not used with public_ip: false") for w in warnings
    )
    given = spec_of("  count: 1\n", extra="  network: corp\n  public_ip: false\n")
    assert any("dlvm adds no Cloud NAT there" in w for w in spec_warnings(gcp_plan(given)))
    shared = spec_of(
        "  count: 1\n",
        extra="  network: projects/host/global/networks/corp\n  manage_firewall: false\n",
    )
    [rules] = [
        w for w in spec_warnings(gcp_plan(shared)) if w.startswith("manage_firewall is false")
    ]
    assert (
        "ingress tcp:22 from 198.51.100.0/24 to instances tagged dlvm-t, on network "
        "projects/host/global/networks/corp (project host)" in rules
    )
    assert "ingress all protocols from instances tagged dlvm-t to instances tagged dlvm-t" in (
        rules
    )
    open_spec = load_spec_text(
        "name: t\nprovider: {kind: gcp, project: p, region: us-central1, zones: [us-central1-a],"
        " allowed_ssh_cidrs: [0.0.0.0/0]}\nnodes: {count: 1}\n",
        Path("/nowhere/t.yaml"),
    ).spec
    assert spec_warnings(gcp_plan(open_spec))[0].startswith(
        "SSH is open to the whole internet (0.0.0.0/0"
    )


# -- reservations ----------------------------------------------------------------------------

A100_RESERVED = A100 + "  reservation: a100-pool\n"
SHARED = "projects/capacity-owner/reservations/a100-pool"


def test_a_named_reservation_keeps_the_zones_it_has_room_in(api: FakeCompute) -> None:
    api.reservation(P, ZONES[1], "a100-pool", "a2-highgpu-2g", count=4, in_use=1)
    report = preflight(spec_of(A100_RESERVED), api.clients())
    assert report.zones == (ZONES[1],)
    assert report.warnings == (
        f"zones {ZONES[0]} are skipped: reservation a100-pool has no room for these nodes "
        "there (it is not there)",
    )
    assert api.calls(f"/zones/{ZONES[1]}/reservations/a100-pool") == 1


def test_a_dense_reservation_makes_the_nodes_reservation_bound_in_its_placement(
    api: FakeCompute,
) -> None:
    api.reservation(
        P,
        ZONES[0],
        "a100-pool",
        "a2-highgpu-2g",
        count=4,
        deployment_type="DENSE",
        placement_policy="a100-placement",
    )
    api.reservation(P, ZONES[1], "a100-pool", "a2-highgpu-2g", count=4)
    report = preflight(spec_of(A100_RESERVED), api.clients())
    assert report.reserved == {
        ZONES[0]: ReservedCapacity(
            dense=True,
            placement_policy="projects/p/regions/us-central1/resourcePolicies/a100-placement",
        ),
        ZONES[1]: ReservedCapacity(dense=False, placement_policy=""),
    }
    # Reservation-bound VMs take no maximum run time: refused before anything is made.
    error = failure(spec_of(A100_RESERVED + "  max_run_hours: 8\n", zones=ZONES[:1]), api)
    assert error.message.startswith(f"reservation a100-pool in {ZONES[0]} is a dense reservation")
    assert "remove nodes.max_run_hours" in error.hint


def test_a_reservation_made_from_an_instance_template_is_not_held_to_a_machine_type(
    api: FakeCompute,
) -> None:
    """Such a reservation names no machine type of its own: it cannot be compared."""
    api.reservation(P, ZONES[0], "a100-pool", "", count=4, template="a100-template")
    report = preflight(spec_of(A100_RESERVED), api.clients())
    assert ZONES[0] in report.zones


def test_a_reservation_in_none_of_the_zones_stops_preflight(api: FakeCompute) -> None:
    api.reservation(P, ZONES[2], "a100-pool", "a2-highgpu-2g", count=4)
    error = failure(spec_of(A100_RESERVED), api)
    assert error.message.startswith(
        f"reservation a100-pool does not exist in {ZONES[0]}, {ZONES[1]} (project p)"
    )
    assert "put its zone in provider.zones" in error.hint


@pytest.mark.parametrize(
    ("machine", "count", "in_use", "status", "problem"),
    [
        (
            "a2-highgpu-1g",
            4,
            0,
            "READY",
            "it holds a2-highgpu-1g VMs, and the nodes are a2-highgpu-2g",
        ),
        ("a2-highgpu-2g", 4, 3, "READY", "1 of its 4 VMs are free, and this cluster needs 2"),
        ("a2-highgpu-2g", 4, 0, "CREATING", "it is CREATING"),
    ],
)
def test_a_reservation_that_cannot_take_the_nodes_stops_preflight(
    api: FakeCompute, machine: str, count: int, in_use: int, status: str, problem: str
) -> None:
    api.reservation(P, ZONES[0], "a100-pool", machine, count, in_use, status=status)
    error = failure(spec_of(A100_RESERVED), api)
    assert (
        error.message == f"reservation a100-pool cannot take these nodes: in {ZONES[0]} {problem}"
    )
    assert "nodes.machine_type" in error.hint


def test_nodes_that_already_use_the_reservation_need_no_more_room(api: FakeCompute) -> None:
    api.reservation(P, ZONES[0], "a100-pool", "a2-highgpu-2g", count=2, in_use=2)
    report = preflight(spec_of(A100_RESERVED), api.clients(), existing_nodes=2)
    assert report.zones == (ZONES[0],)


def test_a_shared_reservation_is_read_from_the_project_that_owns_it(api: FakeCompute) -> None:
    api.reservation("capacity-owner", ZONES[0], "a100-pool", "a2-highgpu-2g", 8, shared_with=(P,))
    nodes = A100 + f"  provisioning: reservation-bound\n  reservation: {SHARED}\n"
    assert preflight(spec_of(nodes), api.clients()).zones == (ZONES[0],)
    assert api.calls(f"/projects/capacity-owner/zones/{ZONES[0]}/reservations/a100-pool") == 1


def test_reserved_nodes_take_no_more_gpu_quota(api: FakeCompute) -> None:
    # The reservation took its quota when it was made; only unreserved nodes need free quota.
    api.region(P, REGION, ZONES, {**REGION_QUOTAS, "NVIDIA_A100_GPUS": (8.0, 8.0)})
    api.reservation(P, ZONES[0], "a100-pool", "a2-highgpu-2g", count=2)
    preflight(spec_of(A100_RESERVED), api.clients())
    assert "NVIDIA_A100_GPUS" in failure(spec_of(A100), api).message


def test_any_or_no_reservation_reads_none(api: FakeCompute) -> None:
    for choice in ("any", "none"):
        preflight(spec_of(A100 + f"  reservation: {choice}\n"), api.clients())
    assert api.calls("/reservations/") == 0


def test_flex_start_uses_the_preemptible_quota(api: FakeCompute) -> None:
    flex = L4_SPOT.replace("spot: true", "provisioning: flex-start\n  max_run_hours: 8")
    api.region(P, REGION, ZONES, {**REGION_QUOTAS, "PREEMPTIBLE_NVIDIA_L4_GPUS": (4.0, 2.0)})
    error = failure(spec_of(flex), api)
    assert "PREEMPTIBLE_NVIDIA_L4_GPUS" in error.message


STORAGE = "storage:\n  - {mount: /ckpt, bucket: gs://ckpt-bucket/runs/r1}\n"


def test_a_reachable_bucket_passes_and_is_listed_under_its_prefix(api: FakeCompute) -> None:
    api.bucket("ckpt-bucket", ["runs/r1/step-10.pt"])
    preflight(_storage_spec(STORAGE), api.clients())
    [(_, _, query)] = [r for r in api.requests if r[1] == "/storage/v1/b/ckpt-bucket/o"]
    assert query["prefix"] == ["runs/r1/"] and query["maxResults"] == ["1"]


def test_a_missing_bucket_fails_with_how_to_create_it(api: FakeCompute) -> None:
    api.bucket("ckpt-bucket", status=404)
    error = failure(_storage_spec(STORAGE), api)
    assert "gs://ckpt-bucket does not exist" in error.message
    assert "gcloud storage buckets create gs://ckpt-bucket" in error.hint


def test_the_clusters_own_account_needs_the_user_to_grant_it_the_bucket(
    api: FakeCompute,
) -> None:
    """Default: dlvm makes the nodes' account and grants it the bucket, so what is checked is
    that the user may set the bucket's policy, not that the user may list it."""
    api.bucket("ckpt-bucket", status=403)  # the user cannot list: irrelevant to the nodes
    preflight(_storage_spec(STORAGE), api.clients())
    api.bucket_iam("ckpt-bucket", can_grant=False)
    error = failure(_storage_spec(STORAGE), api)
    assert error.message == (
        "dlvm grants the cluster's service account roles/storage.objectUser on gs://ckpt-bucket, "
        "but your account cannot change the bucket's IAM policy (storage.buckets.setIamPolicy)"
    )
    assert "provider.service_account" in error.hint


TRAINER = "trainer@p.iam.gserviceaccount.com"
ACCOUNT = f"  service_account: {TRAINER}\n"


def test_an_existing_account_is_checked_for_its_bucket_grant(api: FakeCompute) -> None:
    """A named account: the bucket's policy is read for that account (the nodes' identity),
    and a missing grant says the exact command."""
    api.service_account(TRAINER)
    api.bucket("ckpt-bucket")
    read_only = "storage:\n  - {mount: /data, bucket: gs://ckpt-bucket, read_only: true}\n"
    [warning] = preflight(_storage_spec(read_only, ACCOUNT), api.clients()).warnings
    assert warning.startswith(f"gs://ckpt-bucket grants {TRAINER} none of the roles")
    assert (
        "gcloud storage buckets add-iam-policy-binding gs://ckpt-bucket "
        f"--member=serviceAccount:{TRAINER} --role=roles/storage.objectViewer" in warning
    )
    api.bucket_iam(
        "ckpt-bucket", bindings={"roles/storage.objectViewer": [f"serviceAccount:{TRAINER}"]}
    )
    assert preflight(_storage_spec(read_only, ACCOUNT), api.clients()).warnings == ()
    # A writing mount needs more than the viewer role.
    [warning] = preflight(_storage_spec(STORAGE, ACCOUNT), api.clients()).warnings
    assert "--role=roles/storage.objectUser" in warning
    api.bucket_iam("ckpt-bucket", policy_status=403)
    [warning] = preflight(_storage_spec(STORAGE, ACCOUNT), api.clients()).warnings
    assert warning.startswith("cannot read the IAM policy of gs://ckpt-bucket")


def test_an_existing_account_must_exist_and_be_usable_by_the_user(api: FakeCompute) -> None:
    error = failure(spec_of(T4, extra=ACCOUNT), api)
    assert error.message.startswith(
        f"the service account {TRAINER} (provider.service_account) does not exist"
    )
    api.service_account(TRAINER, act_as=False)
    error = failure(spec_of(T4, extra=ACCOUNT), api)
    assert error.message == (
        f"your account cannot make VMs that run as {TRAINER}: it lacks iam.serviceAccounts.actAs"
    )
    assert "roles/iam.serviceAccountUser" in error.hint
    api.service_account(TRAINER)
    assert preflight(spec_of(T4, extra=ACCOUNT), api.clients()).warnings == ()
    path = f"/v1/projects/-/serviceAccounts/{TRAINER}:testIamPermissions"
    api.routes[("POST", path)] = [(403, {"error": {"code": 403, "message": "IAM API disabled"}})]
    [warning] = preflight(spec_of(T4, extra=ACCOUNT), api.clients()).warnings
    assert warning.startswith(f"cannot check that you may act as {TRAINER} (HTTP 403")


def test_no_storage_no_storage_call(api: FakeCompute) -> None:
    preflight(spec_of(T4), api.clients())
    assert api.calls("/storage/v1/") == 0


def _storage_spec(storage: str, provider_extra: str = "") -> ClusterSpec:
    return load_spec_text(_with_storage(T4, storage, provider_extra), Path("/nowhere/t.yaml")).spec


def _with_storage(nodes: str, storage: str, provider_extra: str = "") -> str:
    return (
        "name: t\nprovider:\n  kind: gcp\n  project: p\n  region: us-central1\n"
        f"  zones: [{', '.join(ZONES[:2])}]\n"
        "  allowed_ssh_cidrs: [198.51.100.0/24]\n" + provider_extra + "nodes:\n" + nodes + storage
    )


A4 = "  count: 2\n  machine_type: a4-highgpu-8g\n  spot: true\n"


def test_rdma_shapes_need_the_roce_profile_of_each_zone(api: FakeCompute) -> None:
    api.region(P, REGION, ZONES, {**REGION_QUOTAS, "NVIDIA_B200_GPUS": (16.0, 0.0)})
    for zone in ZONES:
        api.machine_type(P, zone, "a4-highgpu-8g", ("nvidia-b200", 8))
    api.roce_profile(P, ZONES[0])
    report = preflight(spec_of(A4), api.clients())
    assert report.zones == (ZONES[0],)
    assert (
        "zone us-central1-b has no RoCE network profile (us-central1-b-vpc-roce): the RDMA NICs "
        "of a4-highgpu-8g cannot be attached there: that zone is skipped"
    ) in report.warnings
    error = failure(spec_of(A4, zones=[ZONES[1]]), api)
    assert error.message.startswith("zone us-central1-b has no RoCE network profile")
    api.roce_profile(P, ZONES[1])
    assert preflight(spec_of(A4), api.clients()).zones == tuple(ZONES[:2])


def test_shapes_without_rdma_read_no_network_profile(api: FakeCompute) -> None:
    preflight(spec_of(A100), api.clients())
    assert api.calls("/networkProfiles/") == 0


def test_doctor_checks_the_tunnel_tool_for_private_nodes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from dlvm_cluster.providers.gcp.provider import ComputeEngine

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "none.json"))
    reach = Reach(unreachable=lambda inventory: [], host_key=lambda host, port: "")
    state = ClusterState("t", tmp_path / "state")

    def doctor(spec: ClusterSpec) -> dict[str, Check]:
        return {c.name: c for c in ComputeEngine(state, spec).doctor(reach)}

    names = doctor(spec_of(T4, extra="  public_ip: false\n"))
    tunnel = names["IAP tunnel (gcloud)"]
    assert not tunnel.ok
    assert "gcloud is not on PATH" in tunnel.detail
    assert "IAP tunnel (gcloud)" not in doctor(spec_of(T4))
    (tmp_path / "gcloud").write_text("#!/bin/sh\n")
    (tmp_path / "gcloud").chmod(0o755)
    names = doctor(spec_of(T4, extra="  public_ip: false\n"))
    assert names["IAP tunnel (gcloud)"].ok


# -- what the shape alone says (plan and up) -----------------------------------------------


@pytest.mark.parametrize(
    ("nodes", "expected"),
    [
        ("  machine_type: a3-megagpu-8g\n", "on-demand capacity of a3-megagpu-8g is rarely"),
        ("  machine_type: a3-highgpu-8g\n  spot: true\n", "GPUDirect-TCPX needs Google's TCPX"),
        (
            "  machine_type: n1-standard-8\n  accelerator: {type: nvidia-tesla-v100, count: 1}\n",
            "nvidia-tesla-v100 is older than Turing",
        ),
    ],
)
def test_the_shape_warns_of_what_would_disappoint(nodes: str, expected: str) -> None:
    warnings = spec_warnings(gcp_plan(spec_of("  count: 2\n" + nodes)))
    assert any(warning.startswith(expected) for warning in warnings), warnings


@pytest.mark.parametrize(
    "nodes",
    [
        "  machine_type: a3-megagpu-8g\n  reservation: h100-pool\n",
        "  machine_type: a3-megagpu-8g\n  provisioning: flex-start\n  max_run_hours: 8\n",
        # An image of the user's own, outside the Deep Learning VM project: its kernel decides.
        "  machine_type: a3-highgpu-8g\n  spot: true\n"
        "  image: projects/my-images/global/images/family/ubuntu-2204-tcpx\n",
        "  machine_type: n1-standard-8\n  accelerator: {type: nvidia-tesla-v100, count: 1}\n"
        "  image: common-cu124-ubuntu-2204-nvidia-550\n",
    ],
)
def test_shapes_that_fit_their_capacity_and_image_say_nothing(nodes: str) -> None:
    assert spec_warnings(gcp_plan(spec_of("  count: 2\n" + nodes))) == []
