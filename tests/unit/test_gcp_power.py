"""Stopping and starting gcp nodes (dlvm stop / start) against the fake Compute Engine API,
and what a node runs to apply autostop to its own VM."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from gcp_fake import API, FakeCompute, running

from dlvm_cluster.errors import ProvisionError, UsageError
from dlvm_cluster.inventory import Inventory, Node
from dlvm_cluster.progress import SilentProgress
from dlvm_cluster.providers.gcp.hostkeys import NodeRef
from dlvm_cluster.providers.gcp.instances import halt, instance_states
from dlvm_cluster.providers.gcp.power import SELF_DELETE, SELF_STOP, autostop_deletions
from dlvm_cluster.providers.gcp.provider import ComputeEngine
from dlvm_cluster.providers.gcp.tfvars import instance_name
from dlvm_cluster.state import ClusterState

P = "p"
ZONE = "us-central1-a"
NODE = NodeRef("node-0", "t-node-0", ZONE)


@pytest.fixture
def api() -> Iterator[FakeCompute]:
    with running() as fake:
        yield fake


def test_a_running_vm_is_stopped_and_shows_stopped(api: FakeCompute) -> None:
    api.instance(P, ZONE, "t-node-0", "RUNNING")
    api.instance_operation(P, ZONE, "t-node-0", "stop", waits=2)
    halt(api.clients(), P, NODE)
    assert api.calls("/instances/t-node-0/stop") == 1
    api.preemptions(P, ZONE, [])
    assert str(instance_states(api.clients(), P, [NODE])["node-0"].node_state) == "stopped"


def test_a_stopped_or_deleted_vm_is_left_alone(api: FakeCompute) -> None:
    api.instance(P, ZONE, "t-node-0", "TERMINATED")
    halt(api.clients(), P, NODE)
    halt(api.clients(), P, NodeRef("node-1", "t-node-1", ZONE))  # no such VM
    assert api.calls("/stop") == 0


def test_a_failed_stop_says_so(api: FakeCompute) -> None:
    api.instance(P, ZONE, "t-node-0", "RUNNING")
    error = {"errors": [{"code": "INTERNAL_ERROR", "message": "try again"}]}
    api.instance_operation(P, ZONE, "t-node-0", "stop", error=error)
    with pytest.raises(ProvisionError) as failed:
        halt(api.clients(), P, NODE)
    assert "could not stop t-node-0" in failed.value.message


def test_a_node_stops_its_own_vm_by_shutting_down_and_deletes_it_through_the_api() -> None:
    engine = ComputeEngine(ClusterState("t", Path("/nowhere")))
    assert engine.self_stop_command("stop") == SELF_STOP
    assert "shutdown -h now" in SELF_STOP
    assert engine.self_stop_command("down") == SELF_DELETE
    assert "-X DELETE" in SELF_DELETE and "service-accounts/default/token" in SELF_DELETE


def _deleted(api: FakeCompute, events: list[tuple[str, str, str]]) -> None:
    """zoneOperations.list answering with instance delete operations (name, user, time)."""
    api.set(
        f"projects/{P}/zones/{ZONE}/operations",
        {
            "kind": "compute#operationList",
            "items": [
                {
                    "kind": "compute#operation",
                    "name": f"operation-{index}",
                    "operationType": "delete",
                    "targetLink": f"{API}/projects/{P}/zones/{ZONE}/instances/{name}",
                    "user": user,
                    "insertTime": when,
                    "status": "DONE",
                }
                for index, (name, user, when) in enumerate(events)
            ],
        },
    )


def test_vms_deleted_by_the_nodes_account_were_taken_down_by_autostop(
    api: FakeCompute, tmp_path: Path
) -> None:
    state = ClusterState("c", tmp_path)
    (tmp_path / "terraform").mkdir()
    (tmp_path / "terraform" / "terraform.tfvars.json").write_text(
        json.dumps({"project": P, "zone": ZONE, "service_account_email": ""})
    )
    nodes = tuple(Node(f"node-{r}", r, f"10.0.0.{r}", 22, "dlvm", "") for r in range(3))
    inventory = Inventory("c", nodes)
    api.instance(P, ZONE, instance_name("c", "node-2"), "RUNNING")
    account = "123456789-compute@developer.gserviceaccount.com"
    _deleted(
        api,
        [
            (instance_name("c", "node-0"), account, "2026-03-02T09:00:00.000-08:00"),
            (instance_name("c", "node-1"), "someone@example.com", "2026-03-02T09:01:00.000-08:00"),
        ],
    )
    marks = autostop_deletions(state, inventory, clients=api.clients())
    # node-1 was deleted by a person, node-2 runs: only node-0 went for autostop.
    assert list(marks) == ["node-0"]
    mark = marks["node-0"]
    assert (mark.by, mark.action) == ("autostop", "down")
    assert mark.at == datetime.fromisoformat("2026-03-02T09:00:00.000-08:00").timestamp()


def test_a_node_that_cannot_delete_its_vm_powers_it_off_instead(tmp_path: Path) -> None:
    """Without the delete role (or the metadata server), `down` would leave the VM running,
    and billing, forever. Run with a PATH holding only stand-ins: curl refusing as the API
    does without the role, sudo, and a shutdown that records how it was called."""
    tools = tmp_path / "bin"
    tools.mkdir()
    scripts = {
        "curl": "exit 22",  # curl -f's exit for an HTTP error (403)
        "sudo": 'shift; exec "$@"',  # sudo -n CMD ...
        "shutdown": f'echo "$@" > {tmp_path}/shutdown',
    }
    for name, body in scripts.items():
        (tools / name).write_text(f"#!/bin/sh\n{body}\n")
        (tools / name).chmod(0o755)
    done = subprocess.run(
        ["/bin/sh", "-c", SELF_DELETE],
        env={"PATH": str(tools)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (tmp_path / "shutdown").read_text() == "-h now\n"
    assert "powering it off instead" in done.stderr


def test_flex_start_vms_are_not_stopped_but_told_to_go_down(
    api: FakeCompute, tmp_path: Path
) -> None:
    """Compute Engine keeps no capacity for a stopped flex-start VM: `dlvm stop` refuses,
    before any API call, and names `down`."""
    state = ClusterState("c", tmp_path)
    (tmp_path / "terraform").mkdir()
    (tmp_path / "terraform" / "terraform.tfvars.json").write_text(
        json.dumps({"project": P, "zone": ZONE, "provisioning_model": "FLEX_START"})
    )
    inventory = Inventory("c", (Node("node-0", 0, "10.0.0.2", 22, "dlvm", ""),))
    api.instance(P, ZONE, instance_name("c", "node-0"), "RUNNING")
    with pytest.raises(UsageError) as caught:
        ComputeEngine(state).stop_nodes(inventory, SilentProgress(), by="dlvm stop")
    assert "flex-start VMs, which cannot be stopped" in caught.value.message
    assert "`dlvm down`" in caught.value.hint
    assert api.calls("/instances/") == 0
