"""exec, status, sync and the ssh helpers: inventory -> SSH, no Terraform.

Each takes the command's `Cluster`. `exec` and `sync` go through the cluster's agent
(agent/server.py) when one answers, reusing its open connections; otherwise they connect
through the cluster's pool and then start an agent for the next command. What only the cold
path needs (paramiko, pydantic) is imported inside the functions, and the warm path reads
the inventory file itself (its digest names what the agent must serve) and no more of the
`Cluster` than its state dir, so that it does not pay for them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dlvm_cluster.errors import StateError, UsageError
from dlvm_cluster.inventory import Inventory, Node, unsafe_for_ssh_files
from dlvm_cluster.launch.environment import node_environment
from dlvm_cluster.orchestrate.cluster.records import (
    applied_spec,
    held_secret_names,
    identity_path,
    require_inventory,
)
from dlvm_cluster.progress import Progress
from dlvm_cluster.remote import agent_client, agent_process
from dlvm_cluster.remote.command import HELD_SECRETS_TIMEOUT, wrap
from dlvm_cluster.remote.results import GroupResult
from dlvm_cluster.state import ClusterState, private_dir

if TYPE_CHECKING:
    from dlvm_cluster.orchestrate.cluster.context import Cluster
    from dlvm_cluster.remote.results import LineSink, SyncResult


@dataclass(frozen=True)
class _ExecPlan:
    """What `exec` sends, however it travels: the wrapped command per node, and the secrets
    to mask in its output (their names, and the values resolved here)."""

    inventory: Inventory
    nodes: tuple[Node, ...]
    commands: tuple[str, ...]
    digest: str  # of the inventory file; empty: do not use the agent
    secrets: tuple[str, ...]
    local_secrets: dict[str, str]
    log_dir: Path


def _plan_exec(state: ClusterState, command: str, selector: str | None) -> _ExecPlan:
    if not command.strip():
        raise UsageError("no command given", hint="usage: dlvm exec CLUSTER -- CMD...")
    inventory, digest = _read_inventory(state)
    env, secrets, local_secrets = _exec_env(state)
    nodes = inventory.select(selector)
    commands = tuple(
        wrap(command, node_environment(inventory, node, env), cluster=inventory.cluster)
        for node in nodes
    )
    return _ExecPlan(
        inventory=inventory,
        nodes=tuple(nodes),
        commands=commands,
        digest="" if agent_client.disabled() else digest,
        secrets=secrets,
        local_secrets=local_secrets,
        log_dir=state.exec_logs(time.strftime("%Y%m%d-%H%M%S")),
    )


Runner = Callable[
    [Sequence[Node], Sequence[str], "LineSink", Callable[[str], str], bool], GroupResult | None
]
"""Runs commands[i] on nodes[i]: (nodes, commands, sink, redact, logged) -> the result, or
None when an agent refused and nothing was started."""


def _run_masked(plan: _ExecPlan, progress: Progress, run: Runner) -> GroupResult | None:
    """The plan's commands, their output masked with the secrets the nodes hold (see
    orchestrate/nodes/masking.py); `run(nodes, commands, sink, redact, logged)` runs a batch.
    None: the runner refused (an agent that is busy), and nothing was started."""
    if not plan.secrets:  # nothing to mask, nothing to import (the warm path stays light)
        return run(plan.nodes, plan.commands, progress.line, str, True)

    from dlvm_cluster.orchestrate.nodes.masking import read_masking

    masking = read_masking(
        plan.inventory,
        plan.nodes,
        plan.secrets,
        plan.local_secrets,
        lambda nodes, commands, sink: run(nodes, commands, sink, str, False),
    )
    if masking is None:
        return None
    by_name = dict(zip((node.name for node in plan.nodes), plan.commands, strict=True))
    nodes = masking.runnable(plan.nodes)
    if not nodes:  # none could be masked: none runs
        return masking.merge(plan.nodes, GroupResult(()))
    commands = [by_name[node.name] for node in nodes]
    result = run(nodes, commands, progress.line, masking.redact, True)
    return None if result is None else masking.merge(plan.nodes, result)


def exec_command(
    cluster: Cluster,
    command: str,
    progress: Progress,
    *,
    selector: str | None = None,
    timeout: float | None = None,
) -> GroupResult:
    """Run `command` (shell text) on the selected nodes at once, with the cluster's env.

    Each node's output is also kept under the state dir (logs/exec/<time>/<node>.log).
    Through the cluster's agent when one answers (DLVM_NO_AGENT=1: never), else over new
    connections (the cluster's pool), after which an agent is started in the background for
    the next command."""
    state = cluster.state
    plan = _plan_exec(state, command, selector)

    def through_agent(
        nodes: Sequence[Node],
        commands: Sequence[str],
        sink: LineSink,
        redact: Callable[[str], str],
        logged: bool,
    ) -> GroupResult | None:
        return agent_client.run(
            state.root,
            plan.digest,
            nodes,
            commands,
            sink=sink,
            timeout=timeout if logged else HELD_SECRETS_TIMEOUT,
            make_log_dir=(lambda: _new_log_dir(plan.log_dir)) if logged else None,
            redact=redact,
        )

    if plan.digest:
        result = _run_masked(plan, progress, through_agent)
        if result is not None:
            return result

    from dlvm_cluster.remote.fanout import each_its_own, run_on_nodes

    pool = cluster.pool(plan.inventory)

    def cold(
        nodes: Sequence[Node],
        commands: Sequence[str],
        sink: LineSink,
        redact: Callable[[str], str],
        logged: bool,
    ) -> GroupResult:
        return run_on_nodes(
            pool,
            nodes,
            each_its_own(nodes, commands),
            sink=sink,
            timeout=timeout if logged else HELD_SECRETS_TIMEOUT,
            log_dir=_new_log_dir(plan.log_dir) if logged else None,
            redact=redact,
        )

    result = _run_masked(plan, progress, cold)
    assert result is not None  # the cold runner never refuses
    if plan.digest:
        agent_process.spawn(state.root)
    return result


def _read_inventory(state: ClusterState) -> tuple[Inventory, str]:
    """The inventory, and the digest of its file that an agent must be serving (empty: do
    not use one). A missing or damaged inventory is reported by the records module."""
    try:
        raw = state.inventory_path.read_bytes()
        return Inventory.from_json(json.loads(raw)), agent_client.inventory_digest(raw)
    except (OSError, ValueError, KeyError, TypeError):
        return require_inventory(state), ""


def _exec_env(state: ClusterState) -> tuple[dict[str, str], tuple[str, ...], dict[str, str]]:
    """The spec's plain env, the names of the secrets the nodes hold (the spec's, and any
    installed since), and their values as far as they can be resolved here. When the applied
    spec has only plain values, they are read without loading the model."""
    data = state.read_json(state.applied_spec_path)
    spec_data = data.get("spec") if isinstance(data, dict) else None
    env = spec_data.get("env") if isinstance(spec_data, dict) else None
    if isinstance(env, dict) and all(isinstance(value, str) for value in env.values()):
        return dict(env), held_secret_names(state, None), {}

    from dlvm_cluster import secret_env

    spec = applied_spec(state).spec
    return spec.plain_env(), held_secret_names(state, spec), secret_env.resolve(spec, strict=False)


def _new_log_dir(wanted: Path) -> Path:
    """`wanted` (logs/exec/<time>), or with a suffix when a command in the same second
    already has it. Made only when a command runs: a refused warm attempt leaves nothing."""
    private_dir(wanted.parent)
    for attempt in range(1, 1000):
        path = wanted if attempt == 1 else wanted.with_name(f"{wanted.name}-{attempt}")
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue
        return path
    return wanted


def sync_up(
    cluster: Cluster,
    progress: Progress,
    *,
    selector: str | None = None,
    delete: bool = False,
    delete_at_most: int | None = None,
) -> list[SyncResult]:
    """Push the spec's files (the cluster file the command was given, else the spec last
    applied) to the nodes: the applied spec's through the agent when one answers, else over
    the cluster's pool, after which an agent is started for the next command (as `exec`
    does).

    Through the agent, this side reads only the inventory: the agent reads the spec and holds
    the connections and paramiko, which is what makes a small delta sync fast."""
    state, loaded = cluster.state, cluster.loaded
    inventory, digest = _read_inventory(state)
    use_agent = bool(digest) and not agent_client.disabled()
    nodes = inventory.select(selector)
    if loaded is None and use_agent:
        warm = agent_client.sync(
            state.root, digest, nodes, progress, delete=delete, delete_at_most=delete_at_most
        )
        if warm is not None:
            return warm

    from dlvm_cluster.orchestrate.cluster.files import push_files

    spec = loaded or cluster.require_applied()
    pool = cluster.pool(inventory)
    results = push_files(pool, spec, nodes, progress, delete=delete, delete_at_most=delete_at_most)
    if use_agent:
        agent_process.spawn(state.root)
    return results


def sync_down(
    cluster: Cluster, remote: str, local: Path, *, selector: str | None = None
) -> list[SyncResult]:
    """Pull `remote` from every selected node into local/<node>/."""
    from dlvm_cluster.orchestrate.cluster.files import pull_files

    inventory = cluster.require_inventory()
    return pull_files(cluster.pool(), inventory.select(selector), remote, local)


@dataclass(frozen=True)
class NodeStatus:
    name: str
    rank: int
    ip: str
    port: int
    user: str
    reachable: bool
    error: str
    state: str = ""  # running, stopped, preempted, missing or unreachable (report.node_state)
    provider_id: str = ""  # the provider's name for the machine
    stopped_by: str = ""  # a stopped node: user (dlvm stop), autostop (idle) or max_hours
    stopped_at: str = ""  # when, ISO 8601 in local time


def status(cluster: Cluster) -> tuple[Inventory, list[NodeStatus]]:
    """Every node, and whether it answers SSH (through the cluster's pool, which keeps the
    connections for the rest of the command)."""
    from dlvm_cluster.remote.pool import HEALTH_TIMEOUT  # status connects: paramiko is due

    inventory = cluster.require_inventory()
    errors = cluster.pool().connect(inventory.nodes, timeout=HEALTH_TIMEOUT)
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


def ssh_config(cluster: Cluster) -> str:
    """An OpenSSH config with one Host per node, for plain ssh/scp/rsync/pdsh and editors.

    Every value written is checked first (Inventory.checked): a newline in a host name would
    otherwise start an option of its own, such as a ProxyCommand that ssh runs here."""
    state = cluster.state
    inventory = cluster.require_inventory().checked()
    key = _config_path(identity_path(state, inventory))
    known_hosts = _config_path(state.known_hosts)
    blocks = []
    for node in inventory.nodes:
        lines = [
            f"Host {inventory.cluster}-{node.name}",
            f"    HostName {node.config_hostname}",
            f"    Port {node.port}",
            f"    User {node.user}",
            f"    IdentityFile {key}",
            "    IdentitiesOnly yes",
            f"    UserKnownHostsFile {known_hosts}",
            "    StrictHostKeyChecking yes",
            f"    HostKeyAlias {node.host_port}",
            "    KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org",
            "    BatchMode yes",
        ]
        if node.proxy:
            lines.append(f"    ProxyCommand {node.proxy_command}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _config_path(path: Path) -> str:
    """A path as an ssh_config value: `%` doubled (ssh expands %-tokens in these options) and
    quoted when it holds spaces. Control characters and quotes cannot be written at all."""
    text = str(path)
    if unsafe_for_ssh_files(text) or '"' in text:
        raise StateError(
            f"the path {text!r} cannot be written into an ssh config",
            hint="use a DLVM_HOME and an identity file whose paths have no quotes or "
            "control characters",
        )
    text = text.replace("%", "%%")
    return f'"{text}"' if any(char.isspace() for char in text) else text


def ssh_argv(cluster: Cluster, node_selector: str | None) -> list[str]:
    state = cluster.state
    inventory = cluster.require_inventory()
    nodes = inventory.select(node_selector) if node_selector else (inventory.head,)
    if len(nodes) != 1:
        raise UsageError("dlvm ssh opens a shell on one node", hint="name a single node or rank")
    node = nodes[0].checked()
    return [
        "ssh",
        "-i",
        str(identity_path(state, inventory)),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        f"UserKnownHostsFile={state.known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        *(["-o", f"ProxyCommand={node.proxy_command}"] if node.proxy else []),
        "-p",
        str(node.port),
        f"{node.user}@{node.ip}",
    ]
