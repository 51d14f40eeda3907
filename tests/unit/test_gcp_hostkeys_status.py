"""Host keys from guest attributes and instance states (preemption included), against a fake
Compute Engine API served on 127.0.0.1 to the real google-cloud-compute clients."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from gcp_fake import FakeCompute, error_body, guest_attributes, running

from dlvm_cluster.errors import ProvisionError
from dlvm_cluster.inventory import from_terraform_outputs
from dlvm_cluster.providers.gcp.hostkeys import (
    NodeRef,
    node_refs,
    node_refs_for,
    read_host_keys,
)
from dlvm_cluster.providers.gcp.instances import (
    OPERATION_WAITS,
    SETTLE_INTERVAL,
    Recovery,
    instance_states,
    replace_addresses,
    wake,
)
from dlvm_cluster.providers.terraformed import with_host_keys

P = "p"
ZONE = "us-central1-a"
ED25519 = "AAAAC3NzaC1lZDI1NTE5AAAAIBr0qYQxTn2e6Eow7Lk2A3oWq4HqRtqMfX7ok6q2ZTXc"
ECDSA = "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBOo="
RSA = "AAAAB3NzaC1yc2EAAAADAQABAAABAQC7"
OUTPUTS: dict[str, Any] = {
    "nodes": {
        f"node-{rank}": {
            "rank": rank,
            "ip": f"203.0.113.{10 + rank}",
            "internal_ip": f"10.64.0.{2 + rank}",
            "port": 22,
            "user": "dlvm",
            "zone": f"https://www.googleapis.com/compute/v1/projects/p/zones/{ZONE}",
            "instance": f"t-node-{rank}",
            "host_key": "",
        }
        for rank in (1, 0)
    }
}
NODES = [NodeRef("node-0", "t-node-0", ZONE), NodeRef("node-1", "t-node-1", ZONE)]


@pytest.fixture
def api() -> Iterator[FakeCompute]:
    with running() as fake:
        yield fake


def attributes_path(instance: str) -> str:
    return f"projects/{P}/zones/{ZONE}/instances/{instance}/getGuestAttributes"


def not_published() -> tuple[int, dict[str, Any]]:
    return 404, error_body(404, "The resource was not found", "notFound")


def test_node_refs_come_from_the_outputs_in_rank_order() -> None:
    assert node_refs(OUTPUTS) == NODES
    assert node_refs_for("t", ZONE, ["node-0", "node-1"]) == NODES
    with pytest.raises(ProvisionError, match="no `nodes` output"):
        node_refs({})


def test_host_keys_are_read_once_published(api: FakeCompute) -> None:
    api.sequence(
        attributes_path("t-node-0"),
        [
            not_published(),
            not_published(),
            (200, guest_attributes({})),
            (
                200,
                guest_attributes(
                    {"ecdsa-sha2-nistp256": ECDSA, "ssh-ed25519": ED25519, "ssh-rsa": RSA}
                ),
            ),
        ],
    )
    api.set(attributes_path("t-node-1"), guest_attributes({"ssh-rsa": RSA}))
    sleeps: list[float] = []
    keys = read_host_keys(api.clients(), P, NODES, interval=7.0, sleep=sleeps.append)
    assert keys == {"node-0": f"ssh-ed25519 {ED25519}", "node-1": f"ssh-rsa {RSA}"}
    assert sleeps == [7.0, 7.0, 7.0]
    assert api.calls("t-node-1/getGuestAttributes") == 1  # done nodes are not asked again
    queries = [q for _, path, q in api.requests if path.endswith("getGuestAttributes")]
    assert all(q == {"queryPath": ["hostkeys/"]} for q in queries)


def test_host_keys_never_published_fail_clearly(api: FakeCompute) -> None:
    api.set(attributes_path("t-node-0"), guest_attributes({"ssh-ed25519": "not base64!"}))
    api.set(attributes_path("t-node-1"), guest_attributes({"ssh-ed25519": ED25519}))
    sleeps: list[float] = []
    with pytest.raises(ProvisionError) as caught:
        read_host_keys(api.clients(), P, NODES, attempts=3, interval=1.0, sleep=sleeps.append)
    assert caught.value.message.startswith("node-0 published no SSH host key")
    assert sleeps == [1.0, 1.0]


def test_host_keys_complete_the_inventory() -> None:
    keys = {"node-0": f"ssh-ed25519 {ED25519}", "node-1": f"ssh-rsa {RSA}"}
    outputs = with_host_keys(OUTPUTS, keys)
    assert OUTPUTS["nodes"]["node-0"]["host_key"] == ""  # the input is left alone
    inventory = from_terraform_outputs("t", outputs, env={}, gpus_per_node=1)
    assert [(n.name, n.ip, n.user) for n in inventory.nodes] == [
        ("node-0", "203.0.113.10", "dlvm"),
        ("node-1", "203.0.113.11", "dlvm"),
    ]
    assert inventory.known_hosts().splitlines()[0] == f"203.0.113.10 ssh-ed25519 {ED25519}"


def instance(api: FakeCompute, name: str, status: str, **kwargs: Any) -> None:
    api.instance(P, ZONE, name, status, **kwargs)


def test_running_nodes_need_no_operation_lookup(api: FakeCompute) -> None:
    instance(api, "t-node-0", "RUNNING", spot=True)
    instance(api, "t-node-1", "RUNNING")
    states = instance_states(api.clients(), P, NODES)
    assert [(s.status, s.preempted, s.spot) for s in states.values()] == [
        ("RUNNING", False, True),
        ("RUNNING", False, False),
    ]
    assert api.calls("/operations") == 0
    assert replace_addresses(states) == []


def test_preempted_spot_node_stopped_by_compute_engine(api: FakeCompute) -> None:
    instance(api, "t-node-0", "RUNNING", spot=True)
    instance(api, "t-node-1", "TERMINATED", spot=True, last_start="2026-03-01T10:00:00.000-08:00")
    api.preemptions(
        P,
        ZONE,
        [
            ("t-node-10", "2026-03-01T12:00:00.000-08:00"),  # a different VM, same prefix
            ("t-node-1", "2026-03-01T09:00:00.000-08:00"),  # before its last start
            ("t-node-1", "2026-03-01T11:30:00.000-08:00"),
        ],
    )
    states = instance_states(api.clients(), P, NODES)
    assert states["node-1"].preempted
    assert states["node-1"].label == "preempted"
    assert not states["node-0"].preempted
    assert replace_addresses(states) == ['google_compute_instance.node["node-1"]']
    assert states["node-1"].spot and str(states["node-1"].node_state) == "preempted"
    (query,) = [q for _, path, q in api.requests if path.endswith("/operations")]
    assert query["filter"] == ['operationType="compute.instances.preempted"']


def test_node_stopped_after_an_old_preemption_is_just_stopped(api: FakeCompute) -> None:
    instance(api, "t-node-0", "RUNNING")
    instance(api, "t-node-1", "TERMINATED", spot=True, last_start="2026-03-02T10:00:00.000-08:00")
    api.preemptions(P, ZONE, [("t-node-1", "2026-03-01T11:30:00.000-08:00")])
    states = instance_states(api.clients(), P, NODES)
    state = states["node-1"]
    assert not state.preempted
    assert state.label == "terminated"
    # Stopped by someone: started again with its disk, never replaced.
    assert state.recovery is Recovery.START
    assert not state.needs_recreate
    assert replace_addresses(states) == []


@pytest.mark.parametrize(
    ("status", "recovery"),
    [
        ("RUNNING", Recovery.NONE),
        ("STAGING", Recovery.NONE),
        ("STOPPING", Recovery.START),
        ("SUSPENDING", Recovery.RESUME),
        ("SUSPENDED", Recovery.RESUME),
    ],
)
def test_what_up_does_for_each_state(api: FakeCompute, status: str, recovery: Recovery) -> None:
    instance(api, "t-node-0", "RUNNING")
    instance(api, "t-node-1", status)
    api.preemptions(P, ZONE, [])
    states = instance_states(api.clients(), P, NODES)
    assert states["node-1"].recovery is recovery
    assert replace_addresses(states) == []


def test_a_stopping_vm_is_started_once_it_has_stopped(api: FakeCompute) -> None:
    path = f"projects/{P}/zones/{ZONE}/instances/t-node-1"
    instance(api, "t-node-1", "STOPPING")
    stopping = api.routes[("GET", f"/compute/v1/{path}")][0]
    instance(api, "t-node-1", "TERMINATED")
    stopped = api.routes[("GET", f"/compute/v1/{path}")][0]
    api.sequence(path, [stopping, stopping, stopped])
    api.instance_operation(P, ZONE, "t-node-1", "start")
    sleeps: list[float] = []
    woken = wake(api.clients(), P, NODES[1], sleep=sleeps.append)
    assert (woken.failed, woken.gone) == ("", False)
    assert sleeps == [SETTLE_INTERVAL, SETTLE_INTERVAL]
    assert api.calls("/instances/t-node-1/start") == 1


def test_a_start_done_on_the_last_wait_counts_as_done(api: FakeCompute) -> None:
    instance(api, "t-node-1", "TERMINATED")
    api.instance_operation(P, ZONE, "t-node-1", "start", waits=OPERATION_WAITS)
    woken = wake(api.clients(), P, NODES[1], sleep=lambda _: None)
    assert (woken.failed, woken.gone) == ("", False)


def test_an_operation_the_api_no_longer_knows_is_a_clear_error(api: FakeCompute) -> None:
    instance(api, "t-node-1", "TERMINATED")
    api.instance_operation(P, ZONE, "t-node-1", "start", waits=2)
    for key in [key for key in api.routes if key[1].endswith("/wait")]:
        del api.routes[key]  # the API answers 404 for an operation it forgot
    with pytest.raises(ProvisionError) as forgotten:
        wake(api.clients(), P, NODES[1], sleep=lambda _: None)
    assert "no longer known" in forgotten.value.message


def test_a_vm_deleted_before_its_start_is_gone(api: FakeCompute) -> None:
    woken = wake(api.clients(), P, NODES[1], sleep=lambda _: None)
    assert woken.gone
    assert api.calls("/instances/t-node-1/start") == 0


def test_preempted_spot_node_deleted_by_compute_engine(api: FakeCompute) -> None:
    instance(api, "t-node-0", "RUNNING", spot=True)
    api.preemptions(P, ZONE, [("t-node-1", "2026-03-01T11:30:00.000-08:00")])
    states = instance_states(api.clients(), P, NODES)
    assert states["node-1"].status == "MISSING"
    assert states["node-1"].preempted and states["node-1"].spot
    # Gone from the API: a plain apply recreates it, so there is nothing to -replace.
    assert replace_addresses(states) == []


def test_deleted_node_without_preemption_is_missing(api: FakeCompute) -> None:
    instance(api, "t-node-0", "RUNNING")
    api.preemptions(P, ZONE, [])
    state = instance_states(api.clients(), P, NODES)["node-1"]
    assert (state.status, state.preempted, state.label) == ("MISSING", False, "missing")
