"""Stopping and starting gcp nodes (dlvm stop / start) against the fake Compute Engine API,
and what a node runs to apply autostop to its own VM."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gcp_fake import FakeCompute, running

from dlvm_cluster.errors import ProvisionError
from dlvm_cluster.providers.gcp.hostkeys import NodeRef
from dlvm_cluster.providers.gcp.instances import halt, instance_states
from dlvm_cluster.providers.gcp.power import SELF_DELETE, SELF_STOP
from dlvm_cluster.providers.gcp.provider import ComputeEngine

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
    engine = ComputeEngine()
    assert engine.self_stop_command("stop") == SELF_STOP
    assert "shutdown -h now" in SELF_STOP
    assert engine.self_stop_command("down") == SELF_DELETE
    assert "-X DELETE" in SELF_DELETE and "service-accounts/default/token" in SELF_DELETE
