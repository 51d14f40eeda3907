"""`status` of a gcp cluster shows how its VMs are provided (provisioning model, reservation,
max run time), in the words `plan` uses, as a line of text and as fields of `status --json`.

The cluster is a recorded one: its applied spec, its kind and a node on a loopback port nothing
listens on. No Google credentials are found (GOOGLE_APPLICATION_CREDENTIALS names a missing
file), so the machines' states are unknown and the capacity comes from the applied spec alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from harness import HOST_KEY, closed_port
from typer.testing import CliRunner

from dlvm_cluster import providers
from dlvm_cluster.cli.app import app
from dlvm_cluster.inventory import Inventory, Node
from dlvm_cluster.orchestrate.cluster import report
from dlvm_cluster.orchestrate.cluster.context import Cluster
from dlvm_cluster.orchestrate.cluster.records import record_kind, save_applied, save_inventory
from dlvm_cluster.providers import load_spec_text
from dlvm_cluster.providers.gcp.plan import gcp_plan
from dlvm_cluster.providers.gcp.report import gcp_plan_notes
from dlvm_cluster.state import ClusterState

SPEC = (
    "name: fs\nprovider:\n  kind: gcp\n  project: p\n  region: us-central1\n"
    "  zones: [us-central1-a]\n  allowed_ssh_cidrs: [198.51.100.0/24]\n"
    "nodes:\n  count: 1\n  machine_type: a3-highgpu-2g\n  provisioning: flex-start\n"
    "  max_run_hours: 24\n"
)


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ClusterState:
    monkeypatch.setenv("DLVM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))
    state = ClusterState.for_name("fs")
    state.create()
    record_kind(state, "gcp")
    save_applied(state, load_spec_text(SPEC, tmp_path / "fs.yaml"))
    node = Node("node-0", 0, "127.0.0.1", closed_port(), "dlvm", HOST_KEY)
    save_inventory(state, Inventory("fs", (node,)))
    return state


def test_status_reports_the_capacity_plan_shows(cluster: ClusterState, tmp_path: Path) -> None:
    found = report.report(Cluster(cluster))
    assert found.provider_problem is not None  # no credentials: the spec alone tells
    assert found.capacity is not None
    plan_line = gcp_plan_notes(gcp_plan(load_spec_text(SPEC, tmp_path / "fs.yaml").spec))[-2]
    assert found.capacity.summary == plan_line
    assert plan_line == (
        "capacity: flex-start (the VMs are created when Dynamic Workload Scheduler finds "
        "capacity); reservation: none; max run time: 24h, then Compute Engine deletes each VM"
    )


def test_status_text_and_json_show_the_capacity(cluster: ClusterState) -> None:
    text = CliRunner().invoke(app, ["status", "fs"])
    assert text.exit_code == 0, text.output
    assert "capacity: flex-start (the VMs are created" in text.output
    assert "max run time: 24h" in text.output

    as_json = CliRunner().invoke(app, ["status", "fs", "--json"])
    assert as_json.exit_code == 0, as_json.output
    document = json.loads(as_json.stdout)
    assert document["capacity"] == {
        "provisioning": "flex-start",
        "reservation": "none",
        "max_run_hours": 24,
    }
    # The contract's fields are all still there.
    assert {"cluster", "nodes", "jobs", "price", "provider_problem"} <= set(document)


def test_providers_without_a_choice_report_no_capacity(tmp_path: Path) -> None:
    local = load_spec_text("name: l\nprovider: {kind: local}\nnodes: {count: 1}\n", tmp_path / "l")
    assert providers.for_spec(local.spec, ClusterState("l", tmp_path)).capacity() is None
