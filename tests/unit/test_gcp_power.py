"""Stopping and starting gcp nodes (dlvm stop / start) against the fake Compute Engine API,
and what a node runs to apply autostop to its own VM."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from gcp_fake import API, FakeCompute, running

from dlvm_cluster.errors import ProvisionError, UsageError
from dlvm_cluster.inventory import Inventory, Node
from dlvm_cluster.progress import SilentProgress
from dlvm_cluster.providers.gcp import gang
from dlvm_cluster.providers.gcp.hostkeys import NodeRef
from dlvm_cluster.providers.gcp.instances import halt, instance_states
from dlvm_cluster.providers.gcp.power import SELF_DELETE, SELF_STOP, autostop_deletions
from dlvm_cluster.providers.gcp.provider import ComputeEngine
from dlvm_cluster.providers.gcp.tfvars import instance_name
from dlvm_cluster.state import ClusterState

P = "p"
ZONE = "us-central1-a"
NODES = "dlvm-c@p.iam.gserviceaccount.com"
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


def _run_on_node(
    api: FakeCompute, tmp_path: Path, created_by: str
) -> subprocess.CompletedProcess[str]:
    """SELF_DELETE as VM c-node-1 runs it: a curl stand-in answers as its metadata server
    (a Compute Engine default token, its zone, name and project, and `created-by` where a
    group made it) and sends every Compute API call, as it was built, to the fake API through
    the real curl; sudo and shutdown are stand-ins that record a power-off."""
    tools = tmp_path / "bin"
    tools.mkdir()
    metadata = {
        "/instance/service-accounts/default/token": json.dumps(
            {"access_token": "ya29.token", "expires_in": 3599, "token_type": "Bearer"}
        ),
        "/instance/zone": f"projects/123456789/zones/{ZONE}",
        "/instance/name": instance_name("c", "node-1"),
        "/project/project-id": P,
        **({"/instance/attributes/created-by": created_by} if created_by else {}),
    }
    (tools / "curl").write_text(
        f"#!{sys.executable}\n"
        "import subprocess, sys\n"
        f"METADATA = {metadata!r}\n"
        "url = sys.argv[-1]\n"
        "root = 'http://metadata.google.internal/computeMetadata/v1'\n"
        "if url.startswith(root):\n"
        "    answer = METADATA.get(url[len(root):])\n"
        "    if answer is None:\n"
        "        sys.exit(22)  # curl -f's exit for the metadata server's 404\n"
        "    sys.stdout.write(answer)\n"
        "    sys.exit(0)\n"
        "api = 'https://compute.googleapis.com/'\n"
        "assert url.startswith(api), url\n"
        f"fake = {api.url!r} + '/' + url[len(api):]\n"
        "sys.exit(subprocess.run(['/usr/bin/curl', *sys.argv[1:-1], fake]).returncode)\n"
    )
    for name, body in {
        "sudo": 'shift; exec "$@"',
        "shutdown": f'echo "$@" > {tmp_path}/off',
    }.items():
        (tools / name).write_text(f"#!/bin/sh\n{body}\n")
    for tool in tools.iterdir():
        tool.chmod(0o755)
    return subprocess.run(
        ["/bin/sh", "-c", SELF_DELETE],
        env={"PATH": f"{tools}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_node_terraform_made_deletes_its_own_vm(api: FakeCompute, tmp_path: Path) -> None:
    vm = instance_name("c", "node-1")
    api.instance_operation(P, ZONE, vm, "delete")
    done = _run_on_node(api, tmp_path, created_by="")
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "off").exists()
    deletes = [path for method, path, _ in api.requests if method == "DELETE"]
    assert deletes == [f"/compute/v1/projects/{P}/zones/{ZONE}/instances/{vm}"]
    assert not api.posted


def test_a_gang_node_leaves_through_its_group(api: FakeCompute, tmp_path: Path) -> None:
    """A flex-start gang's VM was made by its group's resize request: deleted by itself, the
    group (whose size it still counts) would make it again, and Terraform bound no per-VM
    role on it. It asks the group, named by its `created-by` metadata, to delete it."""
    group = "dlvm-c"
    held = [instance_name("c", "node-0"), instance_name("c", "node-1")]
    api.gang(P, ZONE, group, ["SUCCEEDED"], members=held)
    done = _run_on_node(
        api, tmp_path, created_by=f"projects/123456789/zones/{ZONE}/instanceGroupManagers/{group}"
    )
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "off").exists()
    [(path, body)] = api.posted
    assert (
        path
        == f"/compute/v1/projects/{P}/zones/{ZONE}/instanceGroupManagers/{group}/deleteInstances"
    )
    assert body == {"instances": [f"zones/{ZONE}/instances/{held[1]}"]}
    assert not [path for method, path, _ in api.requests if method == "DELETE"]
    assert gang.members(api.clients(), P, ZONE, group) == {held[0]}


def test_a_gang_node_the_group_refuses_powers_off(api: FakeCompute, tmp_path: Path) -> None:
    """Without compute.instanceGroupManagers.update on the group (the API's 403), the node
    powers its VM off rather than run on."""
    group = "dlvm-c"
    api.error(
        f"projects/{P}/zones/{ZONE}/instanceGroupManagers/{group}/deleteInstances",
        403,
        "Required 'compute.instanceGroupManagers.update' permission",
        "forbidden",
        method="POST",
    )
    done = _run_on_node(
        api, tmp_path, created_by=f"projects/123456789/zones/{ZONE}/instanceGroupManagers/{group}"
    )
    assert (tmp_path / "off").read_text() == "-h now\n"
    assert "powering it off instead" in done.stderr


def test_gang_nodes_that_left_through_their_group_were_taken_down_by_autostop(
    api: FakeCompute, tmp_path: Path
) -> None:
    """A gang node's VM is deleted by its group (the operation's user is Google's service
    agent): what tells autostop's `down` is the group's deleteInstances by the nodes' account."""
    state = ClusterState("c", tmp_path)
    (tmp_path / "terraform").mkdir()
    (tmp_path / "terraform" / "terraform.tfvars.json").write_text(
        json.dumps({"project": P, "zone": ZONE, "service_account_email": NODES, "flex_gang": True})
    )
    inventory = Inventory(
        "c", tuple(Node(f"node-{r}", r, f"10.0.0.{r}", 22, "dlvm", "") for r in range(3))
    )
    api.instance(P, ZONE, instance_name("c", "node-2"), "RUNNING")
    zone_link = f"{API}/projects/{P}/zones/{ZONE}"
    group = f"{zone_link}/instanceGroupManagers/dlvm-c"
    agent = "123456789@cloudservices.gserviceaccount.com"

    def operations(asked_by: str) -> None:
        api.set(
            f"projects/{P}/zones/{ZONE}/operations",
            {
                "kind": "compute#operationList",
                "items": [
                    {
                        "kind": "compute#operation",
                        "name": "operation-0",
                        "operationType": "compute.instanceGroupManagers.deleteInstances",
                        "targetLink": group,
                        "user": asked_by,
                        "insertTime": "2026-03-02T09:00:00.000-08:00",
                        "status": "DONE",
                    },
                    *(
                        {
                            "kind": "compute#operation",
                            "name": f"operation-{rank + 1}",
                            "operationType": "delete",
                            "targetLink": f"{zone_link}/instances/c-node-{rank}",
                            "user": agent,
                            "insertTime": "2026-03-02T09:00:05.000-08:00",
                            "status": "DONE",
                        }
                        for rank in range(2)
                    ),
                ],
            },
        )

    operations(NODES)
    marks = autostop_deletions(state, inventory, clients=api.clients())
    assert sorted(marks) == ["node-0", "node-1"]
    assert {(m.by, m.action) for m in marks.values()} == {("autostop", "down")}
    assert marks["node-0"].at == datetime.fromisoformat("2026-03-02T09:00:00.000-08:00").timestamp()
    # A person shrinking the group is not autostop.
    operations("someone@example.com")
    assert autostop_deletions(state, inventory, clients=api.clients()) == {}
