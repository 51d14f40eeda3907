"""Node states, stop and start of an aws cluster's instances, against moto; a Spot
interruption and autostop's own shutdown as EC2 reports them."""

from __future__ import annotations

import pytest
from aws_moto import moto_clients, run_node

from dlvm_cluster.errors import ProvisionError
from dlvm_cluster.providers.aws import instances
from dlvm_cluster.providers.aws.instances import Instance, cluster_instances
from dlvm_cluster.providers.aws.power import SELF_DELETE, SELF_STOP, self_stop_marks
from dlvm_cluster.providers.base import NodeState


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
