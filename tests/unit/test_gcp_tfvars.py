"""Spec -> terraform/gcp variables, field by field, and the spec checks the gcp provider adds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from harness import REPO

from dlvm_cluster.errors import ProvisionError, SpecError
from dlvm_cluster.providers import load_spec, load_spec_text
from dlvm_cluster.providers.gcp.converge import render_gcp
from dlvm_cluster.providers.gcp.identity import service_account_id
from dlvm_cluster.providers.gcp.plan import ReservedCapacity, gcp_plan, node_shape
from dlvm_cluster.providers.gcp.tfvars import (
    DEFAULT_IMAGE_FAMILY,
    ImageRef,
    gcp_tfvars,
    gpus_per_node,
    image_ref,
    instance_address,
    instance_name,
    reserved_in_use,
    state_tfvars,
    zone_in_use,
)
from dlvm_cluster.spec.model import ClusterSpec
from dlvm_cluster.state import ClusterState

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBr0qYQxTn2e6Eow7Lk2A3oWq4HqRtqMfX7ok6q2ZTXc dlvm-t"
BASE = """
name: t
provider:
  kind: gcp
  project: p
  region: us-central1
  zones: [us-central1-a, us-central1-b]
  allowed_ssh_cidrs: [198.51.100.0/24]
"""


def spec_of(nodes: str, provider_extra: str = "") -> ClusterSpec:
    text = BASE + provider_extra + "nodes:\n" + nodes
    return load_spec_text(text, Path("/nowhere/t.yaml")).spec


def refused(text: str, field: str, message: str | None) -> SpecError:
    """The loader's error for `text`, checked to name `field` (and `message`) at a place."""
    with pytest.raises(SpecError) as caught:
        load_spec_text(text, Path("/nowhere/t.yaml"))
    assert caught.value.field == field
    if message:
        assert message in caught.value.message
    assert caught.value.location is not None
    return caught.value


def example(name: str) -> ClusterSpec:
    return load_spec(REPO / "examples" / name).spec


def test_a100_torchrun_example_renders_field_by_field() -> None:
    tfvars = gcp_tfvars(example("gcp-a100-torchrun.yaml"), public_key=KEY)
    assert tfvars == {
        "cluster_name": "a100-ddp",
        "project": "my-project",
        "region": "us-central1",
        "zone": "us-central1-a",
        "nodes": {"node-0": {"rank": 0}, "node-1": {"rank": 1}},
        "machine_type": "a2-highgpu-2g",
        # a2 carries its A100s: no guest_accelerator block, but the driver and TERMINATE.
        "guest_accelerators": [],
        "install_nvidia_driver": True,
        "image": "projects/deeplearning-platform-release/global/images/family/"
        "pytorch-2-9-cu129-ubuntu-2204-nvidia-580",
        "disk_gb": 200,
        "disk_type": "pd-balanced",
        # On demand: Compute Engine never ends the VM itself, and it may use any reservation.
        "provisioning_model": "STANDARD",
        "termination_action": "",
        "max_run_hours": None,
        "reservation_affinity": "",
        "reservation_name": "",
        "create_timeout": "30m",
        "flex_gang": False,
        "compact_placement": True,
        "placement_policy": "",
        "nic_type": "GVNIC",
        "network": "",
        "subnetwork": "",
        "subnet_cidr": "10.64.0.0/20",
        # a2 has only its primary NIC: no GPU VPCs, no RDMA, no boot script.
        "gpu_vpc_nics": 0,
        "gpu_vpc_mtu": 8244,
        "rdma_nics": 0,
        "gpu_cidr_range": "10.96.0.0/11",
        "startup_script": "",
        "public_ip": True,
        "allowed_ssh_cidrs": ["203.0.113.7/32"],
        "iap_source_range": "35.235.240.0/20",
        "manage_firewall": True,
        "network_project": "my-project",
        "os_login": False,
        "ssh_user": "dlvm",
        "ssh_public_key": KEY,
        # No provider.service_account: an account made for the cluster, granted logs and
        # metrics (and no buckets: the example mounts none).
        "attach_service_account": True,
        "service_account_email": "dlvm-a100-ddp@my-project.iam.gserviceaccount.com",
        "create_service_account": True,
        "service_account_id": "dlvm-a100-ddp",
        "bucket_grants": {},
        "node_project_roles": ["roles/logging.logWriter", "roles/monitoring.metricWriter"],
        "self_delete": False,
        "self_delete_role_id": "dlvmSelfDelete_a100_ddp",
    }


def test_spot_l4_horovod_example_renders_field_by_field() -> None:
    tfvars = gcp_tfvars(example("gcp-spot-l4-horovod.yaml"), public_key=KEY)
    assert tfvars == {
        "cluster_name": "l4-horovod",
        "project": "my-project",
        "region": "us-central1",
        "zone": "us-central1-a",
        "nodes": {f"node-{rank}": {"rank": rank} for rank in range(4)},
        "machine_type": "g2-standard-12",
        "guest_accelerators": [],
        "install_nvidia_driver": True,
        # No nodes.image: the default family, one with patch support.
        "image": "projects/deeplearning-platform-release/global/images/family/"
        "pytorch-2-9-cu129-ubuntu-2204-nvidia-580",
        "disk_gb": 150,
        "disk_type": "pd-balanced",
        # spot: true is provisioning: spot; a preempted node is deleted, `up` recreates it.
        "provisioning_model": "SPOT",
        "termination_action": "DELETE",
        "max_run_hours": None,
        "reservation_affinity": "",
        "reservation_name": "",
        "create_timeout": "30m",
        "flex_gang": False,
        "compact_placement": False,
        "placement_policy": "",
        "nic_type": "GVNIC",
        "network": "",
        "subnetwork": "",
        "subnet_cidr": "10.64.0.0/20",
        "gpu_vpc_nics": 0,
        "gpu_vpc_mtu": 8244,
        "rdma_nics": 0,
        "gpu_cidr_range": "10.96.0.0/11",
        "startup_script": "",
        "public_ip": True,
        "allowed_ssh_cidrs": ["203.0.113.0/24"],
        "iap_source_range": "35.235.240.0/20",
        "manage_firewall": True,
        "network_project": "my-project",
        "os_login": False,
        "ssh_user": "dlvm",
        "ssh_public_key": KEY,
        # No provider.service_account: an account made for the cluster, granted logs and
        # metrics (and no buckets: the example mounts none).
        "attach_service_account": True,
        "service_account_email": "dlvm-l4-horovod@my-project.iam.gserviceaccount.com",
        "create_service_account": True,
        "service_account_id": "dlvm-l4-horovod",
        "bucket_grants": {},
        "node_project_roles": ["roles/logging.logWriter", "roles/monitoring.metricWriter"],
        "self_delete": False,
        "self_delete_role_id": "dlvmSelfDelete_l4_horovod",
    }


def test_examples_say_what_they_are_and_load() -> None:
    for name in ("gcp-a100-torchrun.yaml", "gcp-spot-l4-horovod.yaml", "gcp-private-t4.yaml"):
        text = (REPO / "examples" / name).read_text()
        assert text.startswith("# ")
        assert load_spec(REPO / "examples" / name).spec.provider.kind == "gcp"


def test_readme_and_examples_name_the_default_image_family() -> None:
    readme = (REPO / "README.md").read_text()
    google_cloud = readme[readme.index("## Google Cloud") :]
    assert f"`{DEFAULT_IMAGE_FAMILY}`" in google_cloud[: google_cloud.index("\n## ", 3)]
    for name in ("gcp-a100-torchrun.yaml", "gcp-spot-l4-horovod.yaml"):
        image = example(name).nodes.image
        assert image in (None, DEFAULT_IMAGE_FAMILY), name


def test_n1_with_t4_attaches_the_gpus_and_has_no_gvnic() -> None:
    spec = spec_of(
        "  count: 2\n  machine_type: n1-standard-8\n"
        "  accelerator: {type: nvidia-tesla-t4, count: 2}\n"
    )
    tfvars = gcp_tfvars(spec, public_key=KEY)
    assert tfvars["guest_accelerators"] == [{"type": "nvidia-tesla-t4", "count": 2}]
    assert tfvars["install_nvidia_driver"] is True
    assert tfvars["nic_type"] == ""
    assert gpus_per_node(gcp_plan(spec)) == 2


def test_cpu_nodes_get_no_driver_and_a_default_machine() -> None:
    tfvars = gcp_tfvars(spec_of("  count: 1\n"), public_key=KEY)
    assert tfvars["machine_type"] == "n2-standard-8"
    assert tfvars["guest_accelerators"] == []
    assert tfvars["install_nvidia_driver"] is False


def test_a_gpu_alone_picks_its_machine_type() -> None:
    spec = spec_of("  count: 1\n  accelerator: {type: nvidia-l4, count: 4}\n")
    assert node_shape(spec.nodes).machine_type == "g2-standard-48"
    spec = spec_of("  count: 1\n  accelerator: {type: nvidia-tesla-v100, count: 1}\n")
    assert gcp_tfvars(spec, public_key=KEY)["machine_type"] == "n1-standard-8"


# Every accelerator-optimized type Google documents, with the GPUs built into it.
BUILT_IN = [
    *[(f"a2-highgpu-{n}g", "nvidia-tesla-a100", n) for n in (1, 2, 4, 8)],
    ("a2-megagpu-16g", "nvidia-tesla-a100", 16),
    *[(f"a2-ultragpu-{n}g", "nvidia-a100-80gb", n) for n in (1, 2, 4, 8)],
    *[(f"a3-highgpu-{n}g", "nvidia-h100-80gb", n) for n in (1, 2, 4, 8)],
    ("a3-highgpu-8g-nolssd", "nvidia-h100-80gb", 8),
    ("a3-edgegpu-8g", "nvidia-h100-80gb", 8),
    ("a3-megagpu-8g", "nvidia-h100-mega-80gb", 8),
    ("a3-ultragpu-8g", "nvidia-h200-141gb", 8),
    ("a4-highgpu-8g", "nvidia-b200", 8),
    ("a4-highgpu-8g-lowmem", "nvidia-b200", 8),
    ("a4x-highgpu-4g", "nvidia-gb200", 4),
    *[(f"g2-standard-{n}", "nvidia-l4", 1) for n in (4, 8, 12, 16, 32)],
    ("g2-standard-24", "nvidia-l4", 2),
    ("g2-standard-48", "nvidia-l4", 4),
    ("g2-standard-96", "nvidia-l4", 8),
    ("g4-standard-48", "nvidia-rtx-pro-6000", 1),
    ("g4-standard-96", "nvidia-rtx-pro-6000", 2),
    ("g4-standard-192", "nvidia-rtx-pro-6000", 4),
    ("g4-standard-384", "nvidia-rtx-pro-6000", 8),
]


@pytest.mark.parametrize(("machine", "gpu", "count"), BUILT_IN)
def test_every_gpu_machine_type_renders_as_a_gpu_node(machine: str, gpu: str, count: int) -> None:
    # Spot: every one of these types is offered so (A3 High below 8 GPUs only so, or flex-start).
    spec = spec_of(f"  count: 1\n  machine_type: {machine}\n  spot: true\n")
    shape = node_shape(spec.nodes)
    assert (shape.gpu_type, shape.gpus, shape.attached) == (gpu, count, ())
    tfvars = gcp_tfvars(spec, public_key=KEY)
    # The driver, and with it on_host_maintenance TERMINATE; GPUs come with the type.
    assert tfvars["install_nvidia_driver"] is True
    assert tfvars["guest_accelerators"] == []
    assert tfvars["nic_type"] == "GVNIC"


def test_g4_renders_field_by_field() -> None:
    spec = spec_of("  count: 2\n  machine_type: g4-standard-384\n")
    tfvars = gcp_tfvars(spec, public_key=KEY)
    assert {key: tfvars[key] for key in ("machine_type", "install_nvidia_driver", "disk_type")} == {
        "machine_type": "g4-standard-384",
        "install_nvidia_driver": True,
        # G4 boots from Hyperdisk only.
        "disk_type": "hyperdisk-balanced",
    }
    assert gpus_per_node(gcp_plan(spec)) == 8
    only_gpu = spec_of("  count: 1\n  accelerator: {type: nvidia-rtx-pro-6000, count: 4}\n")
    assert node_shape(only_gpu.nodes).machine_type == "g4-standard-192"


def test_gpu_family_type_missing_from_the_table_still_gets_the_driver() -> None:
    # A fractional G4 shape: preflight reads its GPUs from the API.
    spec = spec_of("  count: 1\n  machine_type: g4-standard-6\n")
    assert node_shape(spec.nodes).gpus is None
    assert gcp_tfvars(spec, public_key=KEY)["install_nvidia_driver"] is True


def test_existing_network_and_options_pass_through() -> None:
    spec = spec_of(
        "  count: 1\n  machine_type: a3-highgpu-8g\n  disk_type: hyperdisk-balanced\n",
        "  network: shared-vpc\n  subnetwork: gpu-subnet\n  public_ip: false\n"
        "  ssh_user: trainer\n",
    )
    tfvars = gcp_tfvars(spec, public_key=KEY, zone="us-central1-b")
    assert tfvars["network"] == "shared-vpc"
    assert tfvars["subnetwork"] == "gpu-subnet"
    assert tfvars["public_ip"] is False
    assert tfvars["ssh_user"] == "trainer"
    assert tfvars["disk_type"] == "hyperdisk-balanced"
    assert tfvars["zone"] == "us-central1-b"
    assert gpus_per_node(gcp_plan(spec)) == 8


@pytest.mark.parametrize(
    ("service_account", "attached", "email"),
    [
        (None, True, "dlvm-t@p.iam.gserviceaccount.com"),
        ("trainer@p.iam.gserviceaccount.com", True, "trainer@p.iam.gserviceaccount.com"),
        (
            "123456789-compute@developer.gserviceaccount.com",
            True,
            "123456789-compute@developer.gserviceaccount.com",
        ),
        ("none", False, ""),
    ],
)
def test_nodes_get_the_service_account_the_spec_names(
    service_account: str | None, attached: bool, email: str
) -> None:
    extra = "" if service_account is None else f"  service_account: {service_account}\n"
    tfvars = gcp_tfvars(spec_of("  count: 1\n", extra), public_key=KEY)
    assert tfvars["attach_service_account"] is attached
    assert tfvars["service_account_email"] == email
    assert tfvars["create_service_account"] is (service_account is None)


@pytest.mark.parametrize(
    "service_account",
    ["trainer", "trainer@example.com", "default", "None", "a b@p.iam.gserviceaccount.com"],
)
def test_a_service_account_that_is_no_email_is_refused_at_its_line(service_account: str) -> None:
    text = BASE + f"  service_account: {service_account!r}\nnodes: {{count: 1}}\n"
    refused(text, "provider.service_account", "service account's email")


CAPACITY_KEYS = (
    "provisioning_model",
    "termination_action",
    "max_run_hours",
    "reservation_affinity",
    "reservation_name",
)


@pytest.mark.parametrize(
    ("nodes", "rendered"),
    [
        ("", ("STANDARD", "", None, "", "")),
        ("  spot: true\n", ("SPOT", "DELETE", None, "", "")),
        ("  provisioning: spot\n", ("SPOT", "DELETE", None, "", "")),
        ("  provisioning: spot\n  spot: true\n", ("SPOT", "DELETE", None, "", "")),
        ("  provisioning: standard\n  spot: false\n", ("STANDARD", "", None, "", "")),
        # A run-time limit needs a termination action even on demand.
        ("  max_run_hours: 12\n", ("STANDARD", "DELETE", 12, "", "")),
        # Flex-start takes no reservation, whether the file says so or not.
        (
            "  provisioning: flex-start\n  max_run_hours: 168\n",
            ("FLEX_START", "DELETE", 168, "NO_RESERVATION", ""),
        ),
        (
            "  provisioning: flex-start\n  max_run_hours: 4\n  reservation: none\n",
            ("FLEX_START", "DELETE", 4, "NO_RESERVATION", ""),
        ),
        (
            "  provisioning: reservation-bound\n  reservation: h100-pool\n",
            ("RESERVATION_BOUND", "DELETE", None, "SPECIFIC_RESERVATION", "h100-pool"),
        ),
        (
            "  reservation: projects/capacity-owner/reservations/h100-pool\n",
            (
                "STANDARD",
                "",
                None,
                "SPECIFIC_RESERVATION",
                "projects/capacity-owner/reservations/h100-pool",
            ),
        ),
        ("  reservation: any\n", ("STANDARD", "", None, "ANY_RESERVATION", "")),
        ("  reservation: none\n  spot: true\n", ("SPOT", "DELETE", None, "NO_RESERVATION", "")),
    ],
)
def test_capacity_keys_render_as_scheduling_and_reservation_affinity(
    nodes: str, rendered: tuple[object, ...]
) -> None:
    spec = spec_of("  count: 2\n  machine_type: a3-highgpu-8g\n" + nodes)
    tfvars = gcp_tfvars(spec, public_key=KEY)
    assert tuple(tfvars[key] for key in CAPACITY_KEYS) == rendered


@pytest.mark.parametrize(
    ("nodes", "field", "message"),
    [
        (
            "  spot: true\n  provisioning: flex-start\n  max_run_hours: 4\n",
            "nodes.spot",
            "spot: true contradicts provisioning: flex-start",
        ),
        (
            "  spot: false\n  provisioning: spot\n",
            "nodes.spot",
            "spot: false contradicts provisioning: spot",
        ),
        (
            "  provisioning: flex-start\n",
            "nodes.provisioning",
            "flex-start needs nodes.max_run_hours (at most 168)",
        ),
        (
            "  provisioning: flex-start\n  max_run_hours: 169\n",
            "nodes.max_run_hours",
            "169 is more than flex-start's limit of 168 hours",
        ),
        (
            "  provisioning: flex-start\n  max_run_hours: 8\n  reservation: any\n",
            "nodes.reservation",
            "flex-start VMs consume no reservation",
        ),
        (
            "  provisioning: flex-start\n  max_run_hours: 8\n  reservation: h100-pool\n",
            "nodes.reservation",
            "flex-start VMs consume no reservation",
        ),
        (
            "  provisioning: reservation-bound\n",
            "nodes.provisioning",
            "reservation-bound VMs need nodes.reservation",
        ),
        (
            "  provisioning: reservation-bound\n  reservation: any\n",
            "nodes.reservation",
            "reservation-bound VMs need nodes.reservation",
        ),
        ("  provisioning: on-demand\n", "nodes.provisioning", "standard"),
        ("  max_run_hours: 0\n", "nodes.max_run_hours", None),
        ("  max_run_hours: 2881\n", "nodes.max_run_hours", None),
        ("  max_run_hours: true\n", "nodes.max_run_hours", "not true or false"),
        ("  reservation: My_Pool\n", "nodes.reservation", "a reservation's NAME"),
        (
            "  reservation: projects/p/reservations/r\n",
            "nodes.reservation",
            "projects/PROJECT/reservations/NAME",
        ),
        ("  reservation: zones/us-central1-a/reservations/r\n", "nodes.reservation", None),
        (
            "  provisioning: flex-start\n  max_run_hours: 8\n  min_count: 1\n",
            "nodes.min_count",
            "flex-start nodes are created all at once or not at all",
        ),
        (
            "  provisioning: flex-start\n  max_run_hours: 8\nautostop:\n  action: stop\n",
            "autostop.action",
            "flex-start VMs cannot be stopped",
        ),
        (
            "  provisioning: reservation-bound\n  reservation: r\n  max_run_hours: 24\n",
            "nodes.max_run_hours",
            "reservation-bound VMs run until their reservation ends",
        ),
    ],
)
def test_capacity_keys_that_contradict_are_refused_at_their_line(
    nodes: str, field: str, message: str | None
) -> None:
    text = BASE + "nodes:\n  count: 2\n  machine_type: a3-highgpu-8g\n" + nodes
    error = refused(text, field, message)
    assert error.location is not None
    line = next(
        number
        for number, content in enumerate(text.splitlines(), 1)
        if content.strip().startswith(field.split(".")[-1] + ":")
    )
    assert error.location.line == line


def test_flex_start_with_autostop_s_default_action_is_refused() -> None:
    """autostop's default action is stop, which flex-start VMs cannot take."""
    text = BASE + (
        "nodes:\n  count: 2\n  machine_type: a3-highgpu-8g\n  provisioning: flex-start\n"
        "  max_run_hours: 8\nautostop:\n  idle_minutes: 30\n"
    )
    refused(text, "autostop", "set autostop.action to down")
    load_spec_text(text + "  action: down\n", Path("/nowhere/t.yaml"))


NOT_OFFERED = "flex-start VMs are not offered for"
SPOT_OR_FLEX = "is offered only as Spot or flex-start VMs, not standard"
NO_ON_DEMAND = "Google offers no on-demand capacity for"


@pytest.mark.parametrize(
    ("nodes", "field", "message"),
    [
        # Flex-start exists for A2, A3, A4, G2 and H4D only.
        (
            "  machine_type: n1-standard-8\n  accelerator: {type: nvidia-tesla-t4, count: 1}\n"
            "  provisioning: flex-start\n  max_run_hours: 8\n",
            "nodes.provisioning",
            f"{NOT_OFFERED} n1-standard-8",
        ),
        (
            "  accelerator: {type: nvidia-tesla-t4, count: 1}\n"
            "  provisioning: flex-start\n  max_run_hours: 8\n",
            "nodes.provisioning",
            f"{NOT_OFFERED} N1 machine types",
        ),
        (
            "  machine_type: g4-standard-48\n  provisioning: flex-start\n  max_run_hours: 8\n",
            "nodes.provisioning",
            f"{NOT_OFFERED} g4-standard-48",
        ),
        (
            "  accelerator: {type: nvidia-rtx-pro-6000, count: 2}\n"
            "  provisioning: flex-start\n  max_run_hours: 8\n",
            "nodes.provisioning",
            f"{NOT_OFFERED} G4 machine types",
        ),
        (
            "  machine_type: a4x-highgpu-4g\n  provisioning: flex-start\n  max_run_hours: 8\n",
            "nodes.provisioning",
            f"{NOT_OFFERED} a4x-highgpu-4g",
        ),
        (
            "  provisioning: flex-start\n  max_run_hours: 8\n",
            "nodes.provisioning",
            f"{NOT_OFFERED} N2 machine types",
        ),
        # A3 High below 8 GPUs: Spot or flex-start only.
        ("  machine_type: a3-highgpu-2g\n", "nodes.machine_type", f"a3-highgpu-2g {SPOT_OR_FLEX}"),
        (
            "  machine_type: a3-highgpu-1g\n  provisioning: standard\n",
            "nodes.provisioning",
            f"a3-highgpu-1g {SPOT_OR_FLEX}",
        ),
        (
            "  accelerator: {type: nvidia-h100-80gb, count: 4}\n",
            "nodes.accelerator",
            f"a3-highgpu-4g {SPOT_OR_FLEX}",
        ),
        # A4, A4X, A3 Ultra: no on-demand capacity; a reservation, flex-start or Spot.
        ("  machine_type: a4-highgpu-8g\n", "nodes.machine_type", f"{NO_ON_DEMAND} a4-highgpu-8g:"),
        (
            "  machine_type: a3-ultragpu-8g\n  provisioning: standard\n",
            "nodes.provisioning",
            f"{NO_ON_DEMAND} a3-ultragpu-8g:",
        ),
        (
            "  machine_type: a4x-highgpu-4g\n  reservation: none\n",
            "nodes.machine_type",
            f"{NO_ON_DEMAND} a4x-highgpu-4g:",
        ),
        (
            "  accelerator: {type: nvidia-b200, count: 8}\n",
            "nodes.accelerator",
            f"{NO_ON_DEMAND} a4-highgpu-8g:",
        ),
        # A reservation cannot be consumed by Spot VMs.
        (
            "  machine_type: a3-highgpu-8g\n  spot: true\n  reservation: h100-pool\n",
            "nodes.reservation",
            "Spot VMs cannot consume a reservation",
        ),
        (
            "  machine_type: a2-highgpu-1g\n  provisioning: spot\n"
            "  reservation: projects/capacity-owner/reservations/a100-pool\n",
            "nodes.reservation",
            "Spot VMs cannot consume a reservation",
        ),
    ],
)
def test_capacity_compute_engine_does_not_offer_is_refused_at_its_line(
    nodes: str, field: str, message: str
) -> None:
    text = BASE + "nodes:\n  count: 2\n" + nodes
    error = refused(text, field, message)
    assert error.location is not None
    key = field.split(".")[-1] + ":"
    line = next(
        n for n, content in enumerate(text.splitlines(), 1) if content.strip().startswith(key)
    )
    assert error.location.line == line


@pytest.mark.parametrize(
    "nodes",
    [
        "  machine_type: a3-highgpu-2g\n  provisioning: flex-start\n  max_run_hours: 8\n",
        "  machine_type: a3-highgpu-4g\n  spot: true\n",
        "  accelerator: {type: nvidia-h100-80gb, count: 1}\n  provisioning: spot\n",
        "  machine_type: a3-highgpu-8g\n",
        "  machine_type: a3-highgpu-1g\n  provisioning: reservation-bound\n  reservation: r\n",
        "  machine_type: g2-standard-12\n  provisioning: flex-start\n  max_run_hours: 8\n",
        "  machine_type: a4-highgpu-8g\n  provisioning: flex-start\n  max_run_hours: 168\n",
        "  machine_type: a4-highgpu-8g\n  reservation: b200-pool\n",
        "  machine_type: a3-ultragpu-8g\n  reservation: any\n",
        "  machine_type: a4-highgpu-8g\n  spot: true\n",
        "  machine_type: a3-ultragpu-8g\n  provisioning: reservation-bound\n  reservation: r\n",
        "  machine_type: h4d-highmem-192\n  provisioning: flex-start\n  max_run_hours: 8\n",
        "  accelerator: {type: nvidia-tesla-a100, count: 2}\n  provisioning: flex-start\n"
        "  max_run_hours: 8\n",
        "  machine_type: a3-highgpu-8g\n  spot: true\n  reservation: none\n",
        "  machine_type: a3-highgpu-8g\n  spot: true\n  reservation: any\n",
    ],
)
def test_capacity_compute_engine_offers_loads(nodes: str) -> None:
    spec_of("  count: 2\n" + nodes)


@pytest.mark.parametrize(
    ("wait", "rendered"),
    [(None, "30m"), (7200, "2h"), (5400, "1h30m"), (90, "1m30s"), (45.4, "45s"), (0.2, "1s")],
)
def test_the_wait_of_up_is_the_create_timeout(wait: float | None, rendered: str) -> None:
    spec = spec_of("  count: 1\n")
    assert gcp_tfvars(spec, public_key=KEY, wait=wait)["create_timeout"] == rendered


def test_standard_nodes_on_a_dense_reservation_are_reservation_bound_in_its_placement() -> None:
    """Compute Engine refuses STANDARD VMs consuming a DENSE reservation, and a VM consumes a
    reservation made with a placement policy only if it names that policy; preflight reads
    both from the reservation, and the user writes neither."""
    spec = spec_of("  count: 2\n  machine_type: a3-megagpu-8g\n  reservation: h100-dense\n")
    plain = gcp_tfvars(spec, public_key=KEY)
    assert (plain["provisioning_model"], plain["placement_policy"]) == ("STANDARD", "")
    policy = "projects/p/regions/us-central1/resourcePolicies/h100-placement"
    tfvars = gcp_tfvars(spec, public_key=KEY, reserved=ReservedCapacity(True, policy))
    assert tfvars["provisioning_model"] == "RESERVATION_BOUND"
    assert tfvars["termination_action"] == "DELETE"
    assert tfvars["max_run_hours"] is None
    assert (tfvars["reservation_affinity"], tfvars["reservation_name"]) == (
        "SPECIFIC_RESERVATION",
        "h100-dense",
    )
    assert (tfvars["placement_policy"], tfvars["compact_placement"]) == (policy, False)
    # A flexible reservation: the provisioning stays as written.
    flexible = gcp_tfvars(spec, public_key=KEY, reserved=ReservedCapacity(False, ""))
    assert flexible["provisioning_model"] == "STANDARD"


def test_a_later_render_keeps_what_preflight_read_of_the_reservation(tmp_path: Path) -> None:
    spec = spec_of("  count: 2\n  machine_type: a3-megagpu-8g\n  reservation: h100-dense\n")
    policy = "projects/p/regions/us-central1/resourcePolicies/h100-placement"
    applied = gcp_tfvars(spec, public_key=KEY, reserved=ReservedCapacity(True, policy))
    path = tmp_path / "terraform.tfvars.json"
    path.write_text(json.dumps(applied))
    zone = applied["zone"]
    assert reserved_in_use(path, spec.nodes, zone) == ReservedCapacity(True, policy)
    other = spec_of("  count: 2\n  machine_type: a3-megagpu-8g\n  reservation: other\n")
    assert reserved_in_use(path, other.nodes, zone) is None
    assert reserved_in_use(path, spec.nodes, "us-central1-b") is None


def test_explicit_node_names_keep_their_order_as_ranks() -> None:
    tfvars = gcp_tfvars(spec_of("  count: 3\n"), public_key=KEY, names=["node-0", "node-2"])
    assert tfvars["nodes"] == {"node-0": {"rank": 0}, "node-2": {"rank": 1}}
    assert gcp_tfvars(spec_of("  count: 3\n"), public_key=KEY, count=5)["nodes"].keys() == {
        f"node-{rank}" for rank in range(5)
    }


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        (
            "  count: 1\n  machine_type: g2-standard-12\n"
            "  accelerator: {type: nvidia-l4, count: 2}\n",
            "carries 1 x nvidia-l4",
        ),
        (
            "  count: 1\n  machine_type: n2-standard-8\n"
            "  accelerator: {type: nvidia-tesla-t4, count: 1}\n",
            "cannot be attached to n2-standard-8",
        ),
        ("  count: 1\n  accelerator: {type: nvidia-l4, count: 3}\n", "no default machine type"),
    ],
)
def test_impossible_shapes_fail_with_the_fix(nodes: str, message: str) -> None:
    with pytest.raises(ProvisionError) as caught:
        gcp_tfvars(spec_of(nodes), public_key=KEY)
    assert message in caught.value.message
    assert caught.value.hint


def test_zone_outside_the_spec_is_refused() -> None:
    with pytest.raises(ProvisionError, match=r"not in provider\.zones"):
        gcp_tfvars(spec_of("  count: 1\n"), public_key=KEY, zone="us-east1-b")


@pytest.mark.parametrize(
    ("image", "ref"),
    [
        (None, ImageRef("deeplearning-platform-release", DEFAULT_IMAGE_FAMILY, True)),
        (
            "common-cu128-ubuntu-2204-nvidia-570",
            ImageRef("deeplearning-platform-release", "common-cu128-ubuntu-2204-nvidia-570", True),
        ),
        (
            "family/pytorch-latest-gpu",
            ImageRef("deeplearning-platform-release", "pytorch-latest-gpu", True),
        ),
        ("projects/my-images/global/images/family/trainer", ImageRef("my-images", "trainer", True)),
        ("projects/my-images/global/images/trainer-v3", ImageRef("my-images", "trainer-v3", False)),
        (
            "https://www.googleapis.com/compute/v1/projects/my-images/global/images/trainer-v3",
            ImageRef("my-images", "trainer-v3", False),
        ),
    ],
)
def test_image_references(image: str | None, ref: ImageRef) -> None:
    assert image_ref(image) == ref


def test_names_and_addresses() -> None:
    assert instance_name("demo", "node-3") == "demo-node-3"
    assert instance_address("node-3") == 'google_compute_instance.node["node-3"]'


def test_render_dispatches_to_gcp_and_keeps_the_zone_in_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DLVM_HOME", str(tmp_path))
    spec = spec_of("  count: 2\n")
    state = ClusterState.for_name(spec.name)
    state.create()
    state.ensure_key_pair()
    module = render_gcp(spec, state)
    assert module.provider == "gcp"
    assert (module.source / "main.tf").exists()
    assert module.tfvars["ssh_public_key"] == state.public_key()
    assert module.tfvars["zone"] == "us-central1-a"
    # After failover to us-central1-b, later renders stay there.
    module.write(state.terraform_dir)
    tfvars_path = state.terraform_dir / "terraform.tfvars.json"
    tfvars_path.write_text(json.dumps({**module.tfvars, "zone": "us-central1-b"}))
    assert state_tfvars(spec, state)["zone"] == "us-central1-b"
    assert render_gcp(spec, state, count=3).tfvars["nodes"].keys() == {"node-0", "node-1", "node-2"}


def test_zone_in_use_ignores_zones_the_spec_dropped(tmp_path: Path) -> None:
    path = tmp_path / "terraform.tfvars.json"
    assert zone_in_use(path, ["us-central1-a"]) is None
    path.write_text(json.dumps({"zone": "us-central1-f"}))
    assert zone_in_use(path, ["us-central1-a"]) is None
    assert zone_in_use(path, ["us-central1-f"]) == "us-central1-f"
    path.write_text("not json")
    assert zone_in_use(path, ["us-central1-f"]) is None


def test_render_before_the_key_exists_leaves_the_key_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DLVM_HOME", str(tmp_path))
    spec = spec_of("  count: 1\n")
    assert render_gcp(spec, ClusterState.for_name(spec.name)).tfvars["ssh_public_key"] == ""


@pytest.mark.parametrize(
    ("provider_extra", "nodes", "field", "message"),
    [
        ("", "  count: 1\n", "provider.zones[1]", "not a zone of us-central1"),
        ("", "  count: 2\n  min_count: 3\n", "nodes.min_count", "more than nodes.count"),
        ("  subnetwork: s\n", "  count: 1\n", "provider.subnetwork", "provider.network"),
        ("", "  count: 1\n  image: Not/An/Image\n", "nodes.image", "Deep Learning VM"),
        ("  ssh_user: Root\n", "  count: 1\n", "provider.ssh_user", None),
    ],
)
def test_gcp_spec_problems_point_at_the_field(
    provider_extra: str, nodes: str, field: str, message: str | None
) -> None:
    base = BASE
    if field == "provider.zones[1]":
        base = base.replace("[us-central1-a, us-central1-b]", "[us-central1-a, europe-west4-a]")
    refused(base + provider_extra + "nodes:\n" + nodes, field, message)


def test_bad_ssh_cidr_and_trailing_dash_are_spec_errors() -> None:
    with pytest.raises(SpecError) as caught:
        load_spec_text(
            BASE.replace("198.51.100.0/24", "my-laptop") + "nodes: {count: 1}\n",
            Path("/nowhere/t.yaml"),
        )
    assert caught.value.field == "provider.allowed_ssh_cidrs[0]"
    with pytest.raises(SpecError) as caught:
        load_spec_text(BASE.replace("name: t", "name: t-") + "nodes: {count: 1}\n", Path("t.yaml"))
    assert caught.value.field == "name"


@pytest.mark.parametrize(
    "cluster", ["t", "a" * 25, "a" * 26, "a" * 40, "a" * 39 + "b", "ab-" + "c" * 37]
)
def test_the_clusters_account_id_fits_googles_rule_and_names_one_cluster(cluster: str) -> None:
    account = service_account_id(cluster)
    assert re.fullmatch(r"[a-z][-a-z0-9]{4,28}[a-z0-9]", account), account
    others = {service_account_id(c) for c in ("t", "a" * 40, "a" * 39 + "b", "a" * 38 + "-b")}
    assert len(others) == 4
    if len(f"dlvm-{cluster}") <= 30:
        assert account == f"dlvm-{cluster}"


def test_a_private_cluster_with_buckets_and_self_delete_renders_its_grants() -> None:
    spec = load_spec_text(
        BASE.replace("  allowed_ssh_cidrs: [198.51.100.0/24]\n", "  public_ip: false\n")
        + "nodes: {count: 1}\n"
        + "storage:\n  - {mount: /a, bucket: gs://both/x}\n  - {mount: /b, bucket: gs://both/y,"
        " read_only: true}\n  - {mount: /c, bucket: gs://read-only, read_only: true}\n"
        + "autostop: {idle_minutes: 10, action: down}\n",
        Path("/nowhere/t.yaml"),
    ).spec
    tfvars = gcp_tfvars(spec, public_key=KEY)
    # A bucket any mount writes to gets the writing role, once.
    assert tfvars["bucket_grants"] == {
        "both": "roles/storage.objectUser",
        "read-only": "roles/storage.objectViewer",
    }
    assert tfvars["self_delete"] is True
    assert tfvars["self_delete_role_id"] == "dlvmSelfDelete_t"
    assert (tfvars["public_ip"], tfvars["allowed_ssh_cidrs"]) == (False, [])
    # Nodes without an account power off instead: no grant to make.
    none = spec.model_copy(
        update={"provider": spec.provider.model_copy(update={"service_account": "none"})}
    )
    assert gcp_tfvars(none, public_key=KEY)["self_delete"] is False


@pytest.mark.parametrize(
    ("nodes", "image"),
    [
        # The RDMA shapes boot Google's accelerator images, as Google's references do.
        (
            "  machine_type: a3-ultragpu-8g\n  spot: true\n",
            "projects/ubuntu-os-accelerator-images/global/images/family/"
            "ubuntu-accelerator-2404-amd64-with-nvidia-580",
        ),
        (
            "  machine_type: a4-highgpu-8g\n  spot: true\n",
            "projects/ubuntu-os-accelerator-images/global/images/family/"
            "ubuntu-accelerator-2404-amd64-with-nvidia-580",
        ),
        (
            "  machine_type: a4x-highgpu-4g\n  spot: true\n",
            "projects/ubuntu-os-accelerator-images/global/images/family/"
            "ubuntu-accelerator-2404-arm64-with-nvidia-580",
        ),
        # Every other shape keeps the Deep Learning VM image.
        (
            "  machine_type: a3-megagpu-8g\n  spot: true\n",
            f"projects/deeplearning-platform-release/global/images/family/{DEFAULT_IMAGE_FAMILY}",
        ),
        # The user's choice wins.
        (
            f"  machine_type: a4-highgpu-8g\n  spot: true\n  image: {DEFAULT_IMAGE_FAMILY}\n",
            f"projects/deeplearning-platform-release/global/images/family/{DEFAULT_IMAGE_FAMILY}",
        ),
    ],
)
def test_each_shape_boots_its_default_image(nodes: str, image: str) -> None:
    assert gcp_tfvars(spec_of("  count: 2\n" + nodes), public_key=KEY)["image"] == image


def test_plan_says_the_accelerator_image_has_no_framework() -> None:
    from dlvm_cluster.providers.gcp.plan import gcp_plan
    from dlvm_cluster.providers.gcp.shape_warnings import shape_warnings

    plan = gcp_plan(spec_of("  count: 2\n  machine_type: a4-highgpu-8g\n  spot: true\n"))
    [warning] = [w for w in shape_warnings(plan) if "accelerator image" in w]
    assert "ubuntu-accelerator-2404-amd64-with-nvidia-580" in warning
    assert "install yours in `setup`" in warning
    chosen = spec_of(
        "  count: 2\n  machine_type: a4-highgpu-8g\n  spot: true\n"
        f"  image: {DEFAULT_IMAGE_FAMILY}\n"
    )
    assert not [w for w in shape_warnings(gcp_plan(chosen)) if "accelerator image" in w]
