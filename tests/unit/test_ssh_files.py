"""What dlvm writes into ssh configs, known_hosts files and ssh command lines: every writer
refuses a field that would break out of its line even when no spec checked it (an inventory
built directly, or a state file edited by hand); `dlvm ssh` and `ssh-config` use the ssh
provider's identity file; the node-to-node config's HostKeyAlias finds the node's key."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from harness import Cli

from dlvm_cluster.errors import StateError
from dlvm_cluster.inventory import Inventory, Node
from dlvm_cluster.orchestrate.cluster import mesh
from dlvm_cluster.orchestrate.cluster.context import Cluster
from dlvm_cluster.orchestrate.cluster.records import save_inventory
from dlvm_cluster.orchestrate.nodes.commands import ssh_argv, ssh_config
from dlvm_cluster.state import ClusterState

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPQe0b1bHqvFXaP0Yb3dXvN7jSRAi3lDRsQFZ3tjv7bC"
INJECTED = "10.0.0.1\n  ProxyCommand touch /tmp/dlvm-owned"


def node(rank: int = 0, **fields: Any) -> Node:
    base = Node(
        name=f"node-{rank}", rank=rank, ip=f"10.0.0.{rank + 1}", port=22, user="u", host_key=KEY
    )
    return dataclasses.replace(base, **fields)


def cluster_state(tmp_path: Path, inventory: Inventory) -> ClusterState:
    """A state dir holding `inventory` as written by hand: no spec, no checks."""
    state = ClusterState(name=inventory.cluster, root=tmp_path / "clusters" / inventory.cluster)
    state.create()
    state.write_json(state.inventory_path, inventory.to_json())
    return state


PLANTED: list[dict[str, str]] = [
    {"ip": INJECTED},
    {"ip": "-oProxyCommand=touch /tmp/dlvm-owned"},
    {"user": "u\nHost *\n  ProxyCommand touch /tmp/dlvm-owned"},
    {"user": "-oProxyCommand=x"},
    {"host_key": KEY + "\n* ssh-ed25519 AAAA"},
    {"host_key": "garbage"},
    {"name": "node-0\nHost *"},
]


@pytest.mark.parametrize("fields", PLANTED)
def test_every_writer_refuses_a_planted_field(fields: dict[str, str], tmp_path: Path) -> None:
    bad = node(0, **fields)
    inventory = Inventory("demo", (node(1), bad))
    with pytest.raises(StateError, match="refusing to write it into ssh files"):
        bad.known_hosts_line()
    writers: list[Callable[[], str]] = [
        inventory.known_hosts,
        lambda: mesh.known_hosts_block(inventory),
        lambda: mesh.ssh_config_block(inventory),
    ]
    for write in writers:
        with pytest.raises(StateError, match="refusing to write it into ssh files"):
            write()
    state = cluster_state(tmp_path, inventory)
    with pytest.raises(StateError):
        ssh_config(Cluster(state))
    with pytest.raises(StateError):
        ssh_argv(Cluster(state), "0")


def test_save_inventory_writes_nothing_when_a_node_is_unfit(tmp_path: Path) -> None:
    state = ClusterState(name="demo", root=tmp_path / "demo")
    state.create()
    with pytest.raises(StateError):
        save_inventory(state, Inventory("demo", (node(ip=INJECTED),)))
    assert not state.inventory_path.exists() and not state.known_hosts.exists()


def test_a_cluster_name_or_identity_file_with_a_newline_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StateError):
        mesh.ssh_config_block(Inventory("demo\nHost *", (node(),)))
    state = cluster_state(tmp_path, Inventory("demo", (node(),), identity_file="k\nHost *"))
    with pytest.raises(StateError, match="identity file"):
        ssh_config(Cluster(state))


def test_the_issues_proxycommand_never_reaches_ssh_config_output(tmp_path: Path) -> None:
    """The reproduction: a host with a newline and a ProxyCommand in the saved inventory."""
    home = tmp_path / "home"
    state = ClusterState(name="demo", root=home / "clusters" / "demo")
    state.create()
    state.write_json(state.inventory_path, Inventory("demo", (node(ip=INJECTED),)).to_json())
    result = Cli(home).run("ssh-config", "demo", timeout=60)
    assert result.returncode == 3, result.stderr
    assert "ProxyCommand" not in result.stdout
    assert "refusing to write it into ssh files" in result.stderr
    assert "Traceback" not in result.stderr


def test_ssh_and_ssh_config_use_the_ssh_providers_identity_file(tmp_path: Path) -> None:
    identity = tmp_path / "my key" / "id_ed25519"
    state = cluster_state(tmp_path, Inventory("demo", (node(),), identity_file=str(identity)))
    config = ssh_config(Cluster(state))
    assert f'IdentityFile "{identity}"' in config
    assert str(state.key_path) not in config
    argv = ssh_argv(Cluster(state), None)
    assert argv[argv.index("-i") + 1] == str(identity)


def test_the_cluster_key_is_used_without_an_identity_file(tmp_path: Path) -> None:
    state = cluster_state(tmp_path, Inventory("demo", (node(),)))
    assert f"IdentityFile {state.key_path}\n" in ssh_config(Cluster(state))
    argv = ssh_argv(Cluster(state), None)
    assert argv[argv.index("-i") + 1] == str(state.key_path)


def test_a_percent_in_a_path_is_not_an_ssh_token(tmp_path: Path) -> None:
    state = cluster_state(tmp_path, Inventory("demo", (node(),), identity_file="/keys/100%d"))
    assert "IdentityFile /keys/100%%d\n" in ssh_config(Cluster(state))


@pytest.mark.skipif(not shutil.which("ssh"), reason="no OpenSSH")
def test_an_ipv6_scope_survives_the_configs_tokens(tmp_path: Path) -> None:
    """`%` starts a token in HostName: a scoped address is written %%, so ssh reads it back."""
    inventory = Inventory("demo", (node(ip="fe80::1%eth0"),))
    configs = {
        "ssh-config": ssh_config(Cluster(cluster_state(tmp_path, inventory))),
        "mesh": mesh.ssh_config_block(inventory),
    }
    for which, text in configs.items():
        config = tmp_path / which
        config.write_text(text)
        target = "demo-node-0" if which == "ssh-config" else "node-0"
        resolved = subprocess.run(
            ["ssh", "-G", "-F", str(config), target], capture_output=True, text=True
        )
        assert resolved.returncode == 0, (which, resolved.stderr)
        assert "hostname fe80::1%eth0\n" in resolved.stdout, which


def mesh_files(tmp_path: Path, port: int) -> tuple[Path, Path, Inventory]:
    inventory = Inventory("demo", (node(0, port=port), node(1, port=port)))
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(mesh.known_hosts_block(inventory))
    config = tmp_path / "config"
    config.write_text(mesh.ssh_config_block(inventory))
    return config, known_hosts, inventory


@pytest.mark.parametrize("port", [22, 2222])
def test_the_mesh_known_hosts_holds_each_nodes_host_key_alias(tmp_path: Path, port: int) -> None:
    _, known_hosts, inventory = mesh_files(tmp_path, port)
    config = mesh.ssh_config_block(inventory)
    names = {line.split()[0] for line in known_hosts.read_text().splitlines() if line[0] != "#"}
    aliases = [line.split()[1] for line in config.splitlines() if "HostKeyAlias" in line]
    for alias in aliases:
        assert any(alias in entry.split(",") for entry in names), (alias, names)


@pytest.mark.skipif(not shutil.which("ssh-keygen") or not shutil.which("ssh"), reason="no OpenSSH")
@pytest.mark.parametrize("port", [22, 2222])
def test_openssh_finds_the_key_under_the_alias_it_uses(tmp_path: Path, port: int) -> None:
    """OpenSSH itself: the alias `ssh -G` resolves for a node (by name and by address) is a
    name `ssh-keygen -F` finds in the known_hosts the mesh installs."""
    config, known_hosts, inventory = mesh_files(tmp_path, port)
    for target in ("node-1", inventory.nodes[1].ip):
        resolved = subprocess.run(
            ["ssh", "-G", "-F", str(config), target], capture_output=True, text=True, check=True
        ).stdout
        settings = dict(line.split(" ", 1) for line in resolved.splitlines() if " " in line)
        assert settings["hostkeyalias"] == "node-1"
        found = subprocess.run(
            ["ssh-keygen", "-F", settings["hostkeyalias"], "-f", str(known_hosts)],
            capture_output=True,
            text=True,
        )
        assert found.returncode == 0, (target, known_hosts.read_text())
        assert KEY.split()[1] in found.stdout


def test_a_state_file_with_a_planted_host_still_gives_a_clear_error(tmp_path: Path) -> None:
    state = cluster_state(tmp_path, Inventory("demo", (node(),)))
    data = json.loads(state.inventory_path.read_text())
    data["nodes"][0]["ip"] = INJECTED
    state.inventory_path.write_text(json.dumps(data))
    with pytest.raises(StateError, match="node 'node-0': its ip"):
        ssh_config(Cluster(state))


# -- nodes reached through a proxy command (private gcp nodes: gcloud's IAP tunnel) ----------

TUNNEL = (
    "gcloud",
    "compute",
    "start-iap-tunnel",
    "demo-node-0",
    "22",
    "--listen-on-stdin",
    "--zone=us-central1-a",
    "--project=p",
)


@pytest.mark.parametrize(
    "proxy",
    [
        ("gcloud", "x\nHost *\n  ProxyCommand touch /tmp/dlvm-owned"),
        ("-oProxyCommand=touch /tmp/dlvm-owned",),
        ("sh -c 'touch /tmp/dlvm-owned'",),
        ("gcloud\r",),
    ],
)
def test_a_planted_proxy_is_refused_by_every_writer(proxy: tuple[str, ...], tmp_path: Path) -> None:
    inventory = Inventory("demo", (node(0, proxy=proxy),))
    with pytest.raises(StateError, match=r"its proxy .* refusing to write it into ssh files"):
        inventory.checked()
    state = cluster_state(tmp_path, inventory)
    with pytest.raises(StateError):
        ssh_config(Cluster(state))
    with pytest.raises(StateError):
        ssh_argv(Cluster(state), "0")
    with pytest.raises(StateError):
        save_inventory(state, inventory)


def test_the_proxy_survives_the_state_file_and_old_inventories_have_none(tmp_path: Path) -> None:
    inventory = Inventory("demo", (node(0, proxy=TUNNEL), node(1)))
    assert Inventory.from_json(json.loads(json.dumps(inventory.to_json()))) == inventory
    old = inventory.to_json()
    for entry in old["nodes"]:
        del entry["proxy"]
    assert {n.proxy for n in Inventory.from_json(old).nodes} == {()}


@pytest.mark.skipif(not shutil.which("ssh"), reason="no OpenSSH")
def test_ssh_runs_the_proxy_command_with_its_arguments_intact(tmp_path: Path) -> None:
    """An argument with a space, a quote and a `%` reaches the tunnel as written: quoted for
    the shell ssh runs ProxyCommand with, `%` doubled against ssh's tokens. The stand-in
    tunnel records its arguments and ends (so the connection fails, after it ran)."""
    record = tmp_path / "argv.json"
    tunnel = tmp_path / "tunnel"
    tunnel.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"open({str(record)!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
    )
    tunnel.chmod(0o755)
    arguments = ("start-iap-tunnel", "demo-node-0", "--account=me 100%x", "it's")
    state = cluster_state(tmp_path, Inventory("demo", (node(0, proxy=(str(tunnel), *arguments)),)))
    config = tmp_path / "config"
    config.write_text(ssh_config(Cluster(state)))
    subprocess.run(
        ["ssh", "-F", str(config), "demo-node-0", "true"], capture_output=True, timeout=60
    )
    assert tuple(json.loads(record.read_text())) == arguments
    record.unlink()
    subprocess.run([*ssh_argv(Cluster(state), "0"), "true"], capture_output=True, timeout=60)
    assert tuple(json.loads(record.read_text())) == arguments
    direct = Inventory("demo", (node(1),))
    direct_cluster = Cluster(cluster_state(tmp_path / "d", direct))
    assert not any("ProxyCommand" in arg for arg in ssh_argv(direct_cluster, "1"))
