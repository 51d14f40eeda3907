"""exec, status, sync and the ssh helpers: inventory -> SSH, no Terraform."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from dlvm_cluster import secret_env
from dlvm_cluster.errors import UsageError
from dlvm_cluster.inventory import Inventory
from dlvm_cluster.launch.environment import node_environment
from dlvm_cluster.orchestrate.files import pull_files, push_files
from dlvm_cluster.orchestrate.records import applied_spec, open_pool, require_inventory
from dlvm_cluster.progress import Progress
from dlvm_cluster.remote.command import wrap
from dlvm_cluster.remote.fanout import run_on_nodes
from dlvm_cluster.remote.results import GroupResult
from dlvm_cluster.remote.sync import SyncResult
from dlvm_cluster.spec.model import LoadedSpec
from dlvm_cluster.state import ClusterState

HEALTH_TIMEOUT = 3.0


def exec_command(
    state: ClusterState,
    command: str,
    progress: Progress,
    *,
    selector: str | None = None,
    timeout: float | None = None,
) -> GroupResult:
    """Run `command` (shell text) on the selected nodes at once, with the cluster's env.

    Each node's output is also kept under the state dir (logs/exec/<time>/<node>.log)."""
    if not command.strip():
        raise UsageError("no command given", hint="usage: dlvm exec CLUSTER -- CMD...")
    inventory = require_inventory(state)
    spec = applied_spec(state).spec
    env = spec.plain_env()
    nodes = inventory.select(selector)
    log_dir = state.logs_dir / "exec" / time.strftime("%Y%m%d-%H%M%S")
    with open_pool(state, inventory) as pool:
        return run_on_nodes(
            pool,
            nodes,
            lambda node: wrap(command, node_environment(inventory, node, env)),
            sink=progress.line,
            timeout=timeout,
            log_dir=log_dir,
            redact=secret_env.redactor(secret_env.resolve(spec, strict=False)),
        )


def sync_up(
    state: ClusterState,
    progress: Progress,
    *,
    loaded: LoadedSpec | None = None,
    selector: str | None = None,
    delete: bool = False,
) -> list[SyncResult]:
    """Push the spec's files (the given spec, else the one last applied) to the nodes."""
    inventory = require_inventory(state)
    spec = loaded or applied_spec(state)
    with open_pool(state, inventory) as pool:
        return push_files(pool, spec, inventory.select(selector), progress, delete=delete)


def sync_down(
    state: ClusterState, remote: str, local: Path, *, selector: str | None = None
) -> list[SyncResult]:
    """Pull `remote` from every selected node into local/<node>/."""
    inventory = require_inventory(state)
    with open_pool(state, inventory) as pool:
        return pull_files(pool, inventory.select(selector), remote, local)


@dataclass(frozen=True)
class NodeStatus:
    name: str
    rank: int
    ip: str
    port: int
    user: str
    reachable: bool
    error: str
    vm: str = ""  # the provider's state of the machine (gcp: running, preempted, ...)


def status(state: ClusterState) -> tuple[Inventory, list[NodeStatus]]:
    inventory = require_inventory(state)
    with open_pool(state, inventory) as pool:
        errors = pool.connect(inventory.nodes, timeout=HEALTH_TIMEOUT)
    rows = [
        NodeStatus(
            name=node.name,
            rank=node.rank,
            ip=node.ip,
            port=node.port,
            user=node.user,
            reachable=node.name not in errors,
            error=str(errors[node.name]) if node.name in errors else "",
        )
        for node in inventory.nodes
    ]
    return inventory, rows


def ssh_config(state: ClusterState) -> str:
    """An OpenSSH config with one Host per node, for plain ssh/scp/rsync/pdsh and editors."""
    inventory = require_inventory(state)
    blocks = []
    for node in inventory.nodes:
        alias = node.ip if node.port == 22 else f"[{node.ip}]:{node.port}"
        lines = [
            f"Host {inventory.cluster}-{node.name}",
            f"    HostName {node.ip}",
            f"    Port {node.port}",
            f"    User {node.user}",
            f"    IdentityFile {state.key_path}",
            "    IdentitiesOnly yes",
            f"    UserKnownHostsFile {state.known_hosts}",
            "    StrictHostKeyChecking yes",
            f"    HostKeyAlias {alias}",
            "    KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org",
            "    BatchMode yes",
        ]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def ssh_argv(state: ClusterState, node_selector: str | None) -> list[str]:
    inventory = require_inventory(state)
    nodes = inventory.select(node_selector) if node_selector else (inventory.head,)
    if len(nodes) != 1:
        raise UsageError("dlvm ssh opens a shell on one node", hint="name a single node or rank")
    node = nodes[0]
    return [
        "ssh",
        "-i",
        str(state.key_path),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        f"UserKnownHostsFile={state.known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-p",
        str(node.port),
        f"{node.user}@{node.ip}",
    ]
