"""Node states, stop and start of an aws cluster's instances, against moto; a Spot
interruption and autostop's own shutdown as EC2 reports them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import boto3
import pytest
from aws_moto import AnsweredBy, interrupt_spot, moto_clients, run_node
from botocore.stub import Stubber

from dlvm_cluster.errors import ProvisionError, UsageError
from dlvm_cluster.inventory import Inventory
from dlvm_cluster.progress import SilentProgress
from dlvm_cluster.providers.aws import instances
from dlvm_cluster.providers.aws.instances import Instance, cluster_instances
from dlvm_cluster.providers.aws.power import SELF_DELETE, SELF_STOP, self_stop_marks
from dlvm_cluster.providers.aws.provider import Ec2
from dlvm_cluster.providers.base import NodeState
from dlvm_cluster.provision.render import TFVARS
from dlvm_cluster.state import ClusterState


def test_states_stop_and_start_through_ec2(monkeypatch: pytest.MonkeyPatch) -> None:
    with moto_clients(monkeypatch) as clients:
        first = run_node(clients, "demo", "node-0")
        run_node(clients, "demo", "node-1")
        run_node(clients, "other", "node-0")  # another cluster's node of the same name
        names = ["node-0", "node-1", "node-2"]
        found = cluster_instances(clients, "demo", names)
        assert found["node-0"].instance_id == first
        assert [found[n].node_state for n in names] == [
            NodeState.RUNNING,
            NodeState.RUNNING,
            NodeState.MISSING,
        ]
        instances.stop(clients, {n: found[n] for n in ("node-0", "node-1")})
        stopped = cluster_instances(clients, "demo", names[:2])
        assert {i.node_state for i in stopped.values()} == {NodeState.STOPPED}
        assert cluster_instances(clients, "other", ["node-0"])["node-0"].state == "running"
        instances.start(clients, stopped)
        again = cluster_instances(clients, "demo", names[:2])
        assert again["node-0"].instance_id == first  # the same instance, its volume kept
        assert {i.node_state for i in again.values()} == {NodeState.RUNNING}
        with pytest.raises(ProvisionError, match="node-2 has no instance to start"):
            instances.start(clients, found)
        clients.ec2.terminate_instances(InstanceIds=[first])
        assert cluster_instances(clients, "demo", ["node-0"])["node-0"].node_state is (
            NodeState.MISSING
        )


def test_a_node_replaced_under_the_same_name_is_its_live_instance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with moto_clients(monkeypatch) as clients:
        old = run_node(clients, "demo", "node-0")
        clients.ec2.terminate_instances(InstanceIds=[old])
        new = run_node(clients, "demo", "node-0")
        assert cluster_instances(clients, "demo", ["node-0"])["node-0"].instance_id == new


@pytest.mark.parametrize(
    ("state", "reason", "expected"),
    [
        ("terminated", "Server.SpotInstanceTermination", NodeState.PREEMPTED),
        ("stopped", "Server.SpotInstanceShutdown", NodeState.PREEMPTED),
        ("shutting-down", "Server.ScheduledStop", NodeState.PREEMPTED),
        ("terminated", "Client.UserInitiatedShutdown", NodeState.MISSING),
        ("stopped", "Client.UserInitiatedShutdown", NodeState.STOPPED),
        ("pending", "", NodeState.RUNNING),
    ],
)
def test_spot_interruption_is_preemption(state: str, reason: str, expected: NodeState) -> None:
    """What EC2 reports for a Spot instance it took back reads as a preempted node, which the
    supervisor replaces alone (as a preempted Compute Engine Spot VM)."""
    assert Instance("i-1", state, reason).node_state is expected


def test_autostop_shutdowns_are_marked_with_their_time() -> None:
    found = {
        "node-0": Instance(
            "i-1",
            "stopped",
            "Client.InstanceInitiatedShutdown",
            "User initiated (2026-12-05 18:00:00 GMT)",
        ),
        "node-1": Instance(
            "i-2",
            "stopped",
            "Client.UserInitiatedShutdown",
            "User initiated (2026-12-05 18:01:00 GMT)",
        ),
        "node-2": Instance(
            "i-3",
            "terminated",
            "Client.InstanceInitiatedShutdown",
            "User initiated (2026-12-05 18:02:00 GMT)",
        ),
    }
    marks = self_stop_marks(found)
    assert set(marks) == {"node-0", "node-2"}
    assert (marks["node-0"].by, marks["node-0"].action) == ("autostop", "stop")
    assert marks["node-0"].at == 1796493600.0
    assert marks["node-2"].action == "down"


def test_self_delete_uses_imdsv2_and_falls_back_to_power_off() -> None:
    assert "X-aws-ec2-metadata-token-ttl-seconds" in SELF_DELETE
    assert "aws ec2 terminate-instances" in SELF_DELETE
    assert SELF_DELETE.endswith(f"{SELF_STOP}; }}")


def test_stopped_instances_ec2_cannot_start_keep_their_volumes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """StartInstances refused for capacity (a stubbed answer: moto always has capacity)."""
    with moto_clients(monkeypatch) as clients:
        instance = run_node(clients, "demo", "node-0")
        clients.ec2.stop_instances(InstanceIds=[instance])
        stub = Stubber(boto3.client("ec2", region_name="us-east-1"))
        stub.add_client_error("start_instances", service_error_code="InsufficientInstanceCapacity")
        stub.activate()
        stubbed = dataclasses.replace(
            clients, ec2=AnsweredBy(clients.ec2, stub.client, "start_instances")
        )
        with pytest.raises(ProvisionError, match="no capacity to start the stopped instances"):
            instances.start(stubbed, {"node-0": Instance(instance, "stopped")})
        stub.assert_no_pending_responses()
        assert cluster_instances(clients, "demo", ["node-0"])["node-0"].state == "stopped"


def test_a_spot_cluster_is_not_stopped(tmp_path: Path) -> None:
    state = ClusterState("s", tmp_path / "state")
    state.terraform_dir.mkdir(parents=True)
    (state.terraform_dir / TFVARS).write_text(json.dumps({"region": "us-east-1", "market": "spot"}))
    with pytest.raises(UsageError, match="Spot instances, which EC2 can terminate but not stop"):
        Ec2(state).stop_nodes(Inventory("s", ()), SilentProgress(), by="user")


def test_a_spot_instance_ec2_took_back_reads_as_preempted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through EC2's own answer (moto's), not a hand-made Instance: the reading the
    supervisor's watcher uses."""
    with moto_clients(monkeypatch) as clients:
        taken = run_node(clients, "demo", "node-0", spot=True)
        run_node(clients, "demo", "node-1", spot=True)
        interrupt_spot(clients, taken)
        found = cluster_instances(clients, "demo", ["node-0", "node-1"])
    assert found["node-0"].node_state == NodeState.PREEMPTED
    assert found["node-1"].node_state == NodeState.RUNNING
