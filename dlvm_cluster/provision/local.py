"""The local provider's half of rendering: a bridge and /24 per cluster, a namespace per node."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from dlvm_cluster.errors import ProvisionError
from dlvm_cluster.state import ClusterState, list_clusters, python_bin_dir

FIRST_HOST = 10  # node-N gets .(10+N); .1 is the bridge (the host side)
SECOND_OCTET_BASE = 200  # clusters use 10.200.0.0 - 10.249.255.0
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def node_name(rank: int) -> str:
    return f"node-{rank}"


def derive_network(identity: str, salt: int = 0) -> dict[str, Any]:
    """Bridge name, veth prefix and subnet from the cluster's identity (its state dir, so that
    same-named clusters under two DLVM_HOMEs get different ones too)."""
    digest = hashlib.sha256(f"{identity}/{salt}".encode()).digest()
    second = SECOND_OCTET_BASE + digest[0] % 50
    third = digest[1]
    tag = digest[2:5].hex()
    return {
        "bridge": f"dlvm-{tag}",
        "gateway_ip": f"10.{second}.{third}.1",
        "prefix_len": 24,
        "veth_prefix": f"dv{tag}",
    }


def _host_addresses() -> set[str]:
    """IPv4 addresses already on this machine's interfaces (other clusters' bridges, whatever
    DLVM_HOME they belong to, and the host's own networks)."""
    try:
        out = subprocess.run(
            ["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return set()
    return {fields[3].split("/")[0] for fields in (line.split() for line in out.splitlines())}


def _host_links() -> set[str]:
    return {path.name for path in Path("/sys/class/net").iterdir()}


def _networks_in_use(except_cluster: str) -> set[str]:
    used = _host_addresses()
    for other in list_clusters():
        if other.name == except_cluster:
            continue
        tfvars = other.terraform_dir / "terraform.tfvars.json"
        if tfvars.exists():
            try:
                used.add(json.loads(tfvars.read_text())["network"]["gateway_ip"])
            except (ValueError, KeyError, OSError):
                continue
    return used


def pick_network(state: ClusterState) -> dict[str, Any]:
    """The cluster's network: the one it already has, else the first derived one not in use."""
    tfvars = state.terraform_dir / "terraform.tfvars.json"
    if tfvars.exists():
        try:
            existing = json.loads(tfvars.read_text())["network"]
            return dict(existing, veth_prefix=existing.get("veth_prefix", ""))
        except (ValueError, KeyError, OSError):
            pass
    used = _networks_in_use(state.name)
    links = _host_links()
    for salt in range(100):
        network = derive_network(str(state.root.resolve()), salt)
        subnet = network["gateway_ip"].rsplit(".", 1)[0] + "."
        if any(address.startswith(subnet) for address in used) or network["bridge"] in links:
            continue
        return network
    raise ProvisionError(
        "no free local subnet left", hint="remove unused clusters with `dlvm down`"
    )


def local_tfvars(state: ClusterState, count: int) -> dict[str, Any]:
    network = pick_network(state)
    prefix = network.pop("veth_prefix")
    _, second, third, _ = network["gateway_ip"].split(".")
    nodes = {
        node_name(rank): {
            "rank": rank,
            "ip": f"10.{second}.{third}.{FIRST_HOST + rank}",
            "veth": f"{prefix}-{rank}",
        }
        for rank in range(count)
    }
    return {
        "cluster_name": state.name,
        "state_dir": str(state.root.resolve()),
        "network": {**network, "veth_prefix": prefix},
        "nodes": nodes,
        "authorized_keys_file": str(state.authorized_keys.resolve()),
        "keep_paths": python_paths_under_tmp(),
        "node_path": local_node_env()["PATH"],
    }


def python_paths_under_tmp() -> list[str]:
    """The running Python environment, when it lives under /tmp: nodes get a private /tmp, and
    would otherwise not find the interpreter and tools (torchrun) dlvm puts on their PATH."""
    paths = []
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
        resolved = os.path.realpath(prefix)
        if resolved == "/tmp" or resolved.startswith("/tmp/"):
            paths.append(resolved)
    return paths


def local_node_env() -> dict[str, str]:
    """Local nodes share the host's filesystem: the Python running dlvm comes first on PATH,
    as a DLVM image puts its framework environment first."""
    return {"PATH": f"{python_bin_dir()}:{DEFAULT_PATH}"}


def check_local_privileges() -> None:
    if os.geteuid() != 0:
        raise ProvisionError(
            "the local provider needs root: it creates network namespaces, a bridge and mounts",
            hint="run dlvm as root (or with CAP_NET_ADMIN and CAP_SYS_ADMIN)",
        )
    for tool in ("/usr/sbin/sshd", "/usr/bin/ssh-keygen"):
        if not os.path.exists(tool):
            raise ProvisionError(
                f"the local provider needs {tool}",
                hint="install it: apt-get install -y openssh-server openssh-client iproute2",
            )
