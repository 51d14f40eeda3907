"""The provider interface: one implementation per kind the spec knows, dispatched in one
place; what each answers without a cluster (plans, states, ids); and `down` holding the lock
until the state dir is gone."""

from __future__ import annotations

import fcntl
import os
import typing
from pathlib import Path

import pytest
from harness import closed_port

from dlvm_cluster import providers
from dlvm_cluster.errors import DlvmError
from dlvm_cluster.inventory import Inventory, Node
from dlvm_cluster.orchestrate.cluster import lifecycle, records
from dlvm_cluster.orchestrate.cluster.context import Cluster
from dlvm_cluster.orchestrate.cluster.report import node_state
from dlvm_cluster.progress import SilentProgress
from dlvm_cluster.providers import load_spec_text
from dlvm_cluster.providers.base import (
    NO_TRUST,
    Converge,
    KeyTrust,
    NodeState,
    Provider,
    Reach,
    UnpinnedHostKeys,
)
from dlvm_cluster.providers.ssh import ExistingHosts
from dlvm_cluster.spec.model import ClusterSpec, LoadedSpec
from dlvm_cluster.state import ClusterState

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBkn3VYvtLJm6uKX8YRHyV8s4XGumUKjpCa6DpBwtNXz"


def spec_kinds() -> set[str]:
    """The provider kinds the cluster file accepts: the `kind` each registered config takes."""
    configs = [kind.config for kind in providers.spec_kinds().kinds]
    return {typing.get_args(config.model_fields["kind"].annotation)[0] for config in configs}


def test_every_kind_of_the_spec_has_one_provider() -> None:
    assert set(providers.kinds()) == spec_kinds()
    interface = {
        name for name in dir(Provider) if not name.startswith("_") and name != "owns_machines"
    }
    for kind in providers.kinds():
        provider = providers.for_kind(kind, ClusterState("c", Path("/nowhere")))
        missing = [name for name in interface if not callable(getattr(provider, name, None))]
        assert missing == [], f"{kind}: {missing}"
        assert isinstance(provider.owns_machines, bool)


def test_node_state_prefers_the_provider_and_falls_back_to_ssh() -> None:
    assert node_state(None, True) == "running"
    assert node_state(None, False) == "unreachable"
    assert node_state(NodeState.RUNNING, False) == "unreachable"
    assert node_state(NodeState.PREEMPTED, False) == "preempted"
    assert node_state(NodeState.STOPPED, False) == "stopped"
    assert node_state(NodeState.MISSING, True) == "missing"


def _ssh_spec(tmp_path: Path) -> ClusterSpec:
    text = (
        "name: adopt\nprovider:\n  kind: ssh\n  hosts:\n"
        "    - {host: 192.0.2.1}\n"
        f"    - {{host: 192.0.2.2, user: ubuntu, host_key: {KEY}}}\n"
        "    - {host: 192.0.2.3, port: 2222}\n"
        "nodes: {count: 3}\n"
    )
    return load_spec_text(text, tmp_path / "adopt.yaml").spec


def _refuse(*args: object) -> typing.NoReturn:
    raise AssertionError("plan must not connect")


def test_ssh_plan_lists_hosts_and_keys_without_connecting(tmp_path: Path) -> None:
    spec = _ssh_spec(tmp_path)
    previous = Inventory(
        "adopt",
        (
            Node("node-0", 0, "192.0.2.1", 22, "root", OTHER_KEY),
            Node("node-3", 3, "192.0.2.9", 22, "root", OTHER_KEY),
        ),
    )
    request = Converge(
        loaded=LoadedSpec(spec=spec, path=tmp_path / "adopt.yaml", text=""),
        state=ClusterState("adopt", tmp_path / "state"),
        previous=previous,
        applied=False,
        progress=SilentProgress(),
        reach=Reach(unreachable=_refuse, host_key=_refuse),
    )
    plan = ExistingHosts(request.state, spec).plan(request)
    assert plan.exists
    actions = [(action, what.split()[0]) for action, what in plan.changes]
    assert actions == [
        ("keep", "node-0"),
        ("adopt", "node-1"),
        ("adopt", "node-2"),
        ("forget", "node-3"),
    ]
    assert "key pinned SHA256:" in plan.changes[0][1]
    assert "ubuntu@192.0.2.2:22 (key from the file SHA256:" in plan.changes[1][1]
    assert "root@192.0.2.3:2222 (key shown and pinned on first contact)" in plan.changes[2][1]
    assert plan.summary == "2 host(s) to adopt, 1 to forget, no Terraform"


def test_down_removes_the_state_dir_while_it_holds_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command waiting for the lock must never find a half-removed state dir."""
    monkeypatch.setenv("DLVM_HOME", str(tmp_path / "home"))
    state = ClusterState.for_name("gone")
    state.create()
    held: list[bool] = []
    remove = lifecycle.shutil.rmtree

    def rmtree_checking_the_lock(path: Path, ignore_errors: bool = False) -> None:
        fd = os.open(state.root / "lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held.append(False)
        except BlockingIOError:
            held.append(True)
        finally:
            os.close(fd)
        remove(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(lifecycle.shutil, "rmtree", rmtree_checking_the_lock)
    lifecycle.down(Cluster(state), SilentProgress())
    assert held == [True]
    assert not state.root.exists()


def _adopt_request(tmp_path: Path, trust: KeyTrust, presented: str) -> Converge:
    text = (
        "name: adopt\nprovider:\n  kind: ssh\n  hosts:\n    - {host: 192.0.2.1}\n"
        "nodes: {count: 1}\n"
    )
    return Converge(
        loaded=load_spec_text(text, tmp_path / "adopt.yaml"),
        state=ClusterState("adopt", tmp_path / "state"),
        previous=None,
        applied=False,
        progress=SilentProgress(),
        reach=Reach(unreachable=_refuse, host_key=lambda host, port: presented),
        trust=trust,
    )


def test_first_contact_pins_only_a_key_the_user_accepted(tmp_path: Path) -> None:
    hosts = ExistingHosts(ClusterState("adopt", tmp_path / "state"))
    with pytest.raises(UnpinnedHostKeys) as asked:
        hosts.provision(_adopt_request(tmp_path, NO_TRUST, KEY))
    assert [node.host_key for node in asked.value.nodes] == [KEY]
    shown = NO_TRUST.adding(asked.value.nodes)
    # The machine presents another key by the time the user said yes: asked again.
    with pytest.raises(UnpinnedHostKeys) as again:
        hosts.provision(_adopt_request(tmp_path, shown, OTHER_KEY))
    assert [node.host_key for node in again.value.nodes] == [OTHER_KEY]
    inventory, changed = hosts.provision(_adopt_request(tmp_path, shown, KEY))
    assert changed and inventory.nodes[0].host_key == KEY
    # Said yes before seeing any key (--yes): whatever is presented is pinned.
    inventory, _ = hosts.provision(_adopt_request(tmp_path, KeyTrust(any_key=True), OTHER_KEY))
    assert inventory.nodes[0].host_key == OTHER_KEY


def test_the_provider_kind_is_recorded_before_the_machines_are_touched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first `up` that fails early still leaves `down` and `status` the right provider."""
    monkeypatch.setenv("DLVM_HOME", str(tmp_path / "home"))
    text = (
        "name: early\nprovider:\n  kind: ssh\n  hosts:\n"
        f"    - {{host: 127.0.0.1, port: {closed_port()}}}\nnodes: {{count: 1}}\n"
    )
    loaded = load_spec_text(text, tmp_path / "early.yaml")
    state = ClusterState.for_name("early")
    state.create()
    with pytest.raises(DlvmError):
        lifecycle.provision(Cluster(state, loaded=loaded), loaded, SilentProgress())
    assert records.load_inventory(state) is None
    assert records.cluster_kind(state) == "ssh"
