"""The JSON Schema of the cluster file, the examples that use it, and `dlvm doctor`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from harness import REPO, write_unreachable_ssh_spec
from ruamel.yaml import YAML

from dlvm_cluster.providers import load_spec, spec_kinds


def json_schema() -> dict[str, object]:
    return spec_kinds().json_schema()


EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def _dlvm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dlvm_cluster", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


def test_schema_command_matches_the_shipped_schema_file() -> None:
    printed = json.loads(_dlvm("schema").stdout)
    assert printed == json_schema()
    shipped = json.loads((REPO / "examples" / "cluster.schema.json").read_text())
    assert shipped == printed, "regenerate: dlvm schema > examples/cluster.schema.json"
    jsonschema.Draft202012Validator.check_schema(printed)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid_and_point_editors_at_the_schema(example: Path) -> None:
    first = example.read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=./cluster.schema.json"
    data = YAML(typ="safe").load(example.read_text())
    jsonschema.validate(data, json_schema())
    assert load_spec(example).spec.name


def test_schema_rejects_what_the_loader_rejects() -> None:
    bad = {"name": "x", "provider": {"kind": "local"}, "nodes": {"count": 1}, "nodez": 1}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, json_schema())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**bad, "nodez": None, "nodes": {"count": "3"}}, json_schema())


@pytest.mark.parametrize(
    ("kind", "nodes"),
    [("local", {"provisioning": "spot"}), ("ssh", {"image": "x"}), ("local", {"disk_gb": 50})],
)
def test_schema_refuses_a_nodes_key_of_another_kind(kind: str, nodes: dict[str, object]) -> None:
    provider: dict[str, object] = {"kind": kind}
    if kind == "ssh":
        provider["hosts"] = [{"host": "10.0.0.1"}]
    good = {"name": "x", "provider": provider, "nodes": {"count": 1}}
    jsonschema.validate(good, json_schema())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**good, "nodes": {"count": 1, **nodes}}, json_schema())


def test_doctor_reports_each_check_with_a_fix() -> None:
    result = _dlvm("doctor")
    lines = result.stdout.splitlines()
    names = [line.split(":")[0].split()[-1] for line in lines if not line.startswith(" ")]
    for expected in ("root", "sshd", "ssh-keygen", "overlayfs", "engine"):
        assert expected in names
    problems = [line for line in lines if line.startswith("problem")]
    assert result.returncode == (1 if problems else 0)


def test_doctor_on_unreachable_ssh_hosts_names_them(tmp_path: Path) -> None:
    spec = write_unreachable_ssh_spec(tmp_path)
    result = _dlvm("doctor", str(spec))
    assert result.returncode == 1
    assert "problem 127.0.0.1:9" in result.stdout
    assert "fix: check the address" in result.stdout
    assert "Traceback" not in result.stderr


def test_readme_references_match_the_cli_and_the_schema() -> None:
    from dlvm_cluster.cli.reference import render_readme

    readme = (REPO / "README.md").read_text()
    assert render_readme(readme) == readme, (
        "regenerate: python -m dlvm_cluster.cli.reference --write README.md"
    )
