"""The stages of each verb: the only module that knows both Terraform and SSH.

up:    spec -> render -> terraform apply -> inventory -> SSH readiness
down:  terraform destroy -> state dir removed
exec:  inventory -> SSH fan-out
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from dlvm_cluster.errors import ProvisionError, StateError, UsageError
from dlvm_cluster.inventory import Inventory, from_terraform_outputs
from dlvm_cluster.launch.environment import node_environment
from dlvm_cluster.progress import Progress
from dlvm_cluster.provision.local import check_local_privileges, local_node_env
from dlvm_cluster.provision.render import TFVARS, RenderedModule, render
from dlvm_cluster.provision.terraform import RunResult, Terraform
from dlvm_cluster.remote.command import wrap
from dlvm_cluster.remote.connection import Credentials
from dlvm_cluster.remote.fanout import run_on_nodes
from dlvm_cluster.remote.pool import SshPool
from dlvm_cluster.remote.results import GroupResult
from dlvm_cluster.spec.model import ClusterSpec, LoadedSpec, LocalProvider
from dlvm_cluster.state import ClusterState, write_atomic

READY_TIMEOUT = 60.0
HEALTH_TIMEOUT = 3.0


@dataclass(frozen=True)
class UpResult:
    inventory: Inventory
    changed: bool
    seconds: float


def _check_provider(spec: ClusterSpec) -> None:
    if isinstance(spec.provider, LocalProvider):
        check_local_privileges()


def _spec_digest(spec: ClusterSpec) -> str:
    return hashlib.sha256(spec.model_dump_json().encode()).hexdigest()


def load_inventory(state: ClusterState) -> Inventory | None:
    data = state.read_json(state.inventory_path)
    return Inventory.from_json(data) if data else None


def require_inventory(state: ClusterState) -> Inventory:
    inventory = load_inventory(state)
    if inventory is None:
        raise StateError(
            f"cluster {state.name!r} has no nodes recorded",
            hint="run `dlvm up FILE` to create it",
        )
    return inventory


def _save_inventory(state: ClusterState, inventory: Inventory) -> None:
    state.write_json(state.inventory_path, inventory.to_json())
    write_atomic(state.known_hosts, inventory.known_hosts())


def _provider_env(spec: ClusterSpec) -> dict[str, str]:
    return local_node_env() if isinstance(spec.provider, LocalProvider) else {}


def _gpus(spec: ClusterSpec) -> int:
    return spec.nodes.accelerator.count if spec.nodes.accelerator else 0


def _init_if_needed(terraform: Terraform, module: RenderedModule, workdir: Path) -> None:
    """`terraform init` once per module version (a marker holds the module's digest)."""
    digest = hashlib.sha256()
    for item in sorted(module.source.iterdir()):
        if item.is_file():
            digest.update(item.name.encode() + item.read_bytes())
    marker = workdir / ".dlvm-init"
    if marker.exists() and marker.read_text() == digest.hexdigest():
        return
    terraform.init()
    write_atomic(marker, digest.hexdigest())


def _unhealthy(state: ClusterState, inventory: Inventory) -> list[str]:
    with SshPool(inventory, Credentials(state.key_path)) as pool:
        errors = pool.connect(inventory.nodes, timeout=HEALTH_TIMEOUT)
    return sorted(errors)


def up(loaded: LoadedSpec, progress: Progress) -> UpResult:
    """Create or converge the cluster; a second run on a healthy cluster changes nothing."""
    started = time.monotonic()
    spec = loaded.spec
    _check_provider(spec)
    state = ClusterState.for_name(spec.name)
    with state.lock("up"):
        state.check_permissions()
        state.ensure_key_pair()
        module = render(spec, state)
        module_changed = module.write(state.terraform_dir)
        previous = load_inventory(state)
        applied = state.read_json(state.applied_spec_path) or {}
        same_spec = applied.get("digest") == _spec_digest(spec)
        broken: list[str] = []
        if previous is not None and not module_changed and same_spec:
            progress.stage("checking nodes")
            broken = _unhealthy(state, previous)
            if not broken:
                return UpResult(previous, changed=False, seconds=time.monotonic() - started)
            progress.note(f"not answering, will be recreated: {', '.join(broken)}")
        terraform = Terraform(state.terraform_dir, progress.terraform)
        progress.stage("terraform")
        _init_if_needed(terraform, module, state.terraform_dir)
        result = terraform.apply(replace=[f'terraform_data.node["{name}"]' for name in broken])
        inventory = from_terraform_outputs(
            spec.name, result.outputs, env=_provider_env(spec), gpus_per_node=_gpus(spec)
        )
        _save_inventory(state, inventory)
        progress.stage("waiting for SSH")
        with SshPool(inventory, Credentials(state.key_path)) as pool:
            pool.wait_ready(inventory.nodes, time.monotonic() + READY_TIMEOUT)
        state.write_json(
            state.applied_spec_path,
            {"digest": _spec_digest(spec), "source": str(loaded.path), "spec": spec.model_dump()},
        )
        return UpResult(inventory, changed=True, seconds=time.monotonic() - started)


def down(state: ClusterState, progress: Progress) -> float:
    """Destroy everything `up` made, then remove the state dir. Safe to run again."""
    started = time.monotonic()
    with state.lock("down"):
        tfvars = state.terraform_dir / TFVARS
        if tfvars.exists():
            applied = state.read_json(state.applied_spec_path) or {}
            kind = ((applied.get("spec") or {}).get("provider") or {}).get("kind", "local")
            if kind == "local":
                check_local_privileges()
            terraform = Terraform(state.terraform_dir, progress.terraform)
            progress.stage("terraform destroy")
            terraform.init()
            terraform.destroy()
    shutil.rmtree(state.root, ignore_errors=True)
    return time.monotonic() - started


@dataclass(frozen=True)
class PlanResult:
    cluster: str
    changes: tuple[tuple[str, str], ...]  # (action, resource address)
    summary: str
    exists: bool


def plan(loaded: LoadedSpec, progress: Progress) -> PlanResult:
    """What `up` would do, from a scratch copy of the module and state: changes nothing."""
    spec = loaded.spec
    state = ClusterState.for_name(spec.name)
    module = render(spec, state)
    with tempfile.TemporaryDirectory(prefix="dlvm-plan-") as scratch:
        workdir = Path(scratch)
        module.write(workdir)
        existing = state.terraform_dir / "terraform.tfstate"
        if existing.exists():
            shutil.copy2(existing, workdir / "terraform.tfstate")
        terraform = Terraform(workdir, progress.terraform)
        terraform.init()
        result: RunResult = terraform.plan(lock=False)
    changes = tuple((event.action, event.address) for event in result.planned)
    summary = result.summary
    text = (
        f"{summary.get('add', 0)} to add, {summary.get('change', 0)} to change, "
        f"{summary.get('remove', 0)} to destroy"
    )
    return PlanResult(spec.name, changes, text, exists=existing.exists())


def render_to(loaded: LoadedSpec, target: Path) -> RenderedModule:
    """Write the module and tfvars `up` would apply (creating the cluster's key pair)."""
    state = ClusterState.for_name(loaded.spec.name)
    state.create()
    state.ensure_key_pair()
    module = render(loaded.spec, state)
    module.write(target)
    return module


def applied_spec(state: ClusterState) -> ClusterSpec:
    data = state.read_json(state.applied_spec_path)
    if not data:
        raise StateError(f"cluster {state.name!r} was never brought up", hint="run `dlvm up FILE`")
    return ClusterSpec.model_validate(data["spec"])


def exec_command(
    state: ClusterState,
    command: str,
    progress: Progress,
    *,
    selector: str | None = None,
    timeout: float | None = None,
) -> GroupResult:
    """Run `command` (shell text) on the selected nodes at once, with the cluster's env."""
    if not command.strip():
        raise UsageError("no command given", hint="usage: dlvm exec CLUSTER -- CMD...")
    inventory = require_inventory(state)
    spec = applied_spec(state)
    nodes = inventory.select(selector)
    log_dir = state.logs_dir / "exec" / time.strftime("%Y%m%d-%H%M%S")
    state.write_json(state.logs_dir / "exec-last.json", {"command": command, "dir": str(log_dir)})
    with SshPool(inventory, Credentials(state.key_path)) as pool:
        return run_on_nodes(
            pool,
            nodes,
            lambda node: wrap(command, node_environment(inventory, node, spec.env)),
            sink=progress.line,
            timeout=timeout,
            log_dir=log_dir,
        )


@dataclass(frozen=True)
class NodeStatus:
    name: str
    rank: int
    ip: str
    port: int
    user: str
    reachable: bool
    error: str


def status(state: ClusterState) -> tuple[Inventory, list[NodeStatus]]:
    inventory = require_inventory(state)
    with SshPool(inventory, Credentials(state.key_path)) as pool:
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
        blocks.append(
            "\n".join(
                [
                    f"Host {inventory.cluster}-{node.name} {inventory.cluster}-{node.rank}",
                    f"    HostName {node.ip}",
                    f"    Port {node.port}",
                    f"    User {node.user}",
                    f"    IdentityFile {state.key_path}",
                    "    IdentitiesOnly yes",
                    f"    UserKnownHostsFile {state.known_hosts}",
                    "    StrictHostKeyChecking yes",
                    f"    HostKeyAlias {node.ip}"
                    if node.port == 22
                    else f"    HostKeyAlias [{node.ip}]:{node.port}",
                    "    KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org",
                    "    BatchMode yes",
                ]
            )
        )
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


def dump_status_json(inventory: Inventory, rows: list[NodeStatus]) -> str:
    return json.dumps(
        {
            "cluster": inventory.cluster,
            "nodes": [row.__dict__ for row in rows],
        },
        indent=2,
    )


def ensure_exists(state: ClusterState) -> None:
    if not state.exists():
        raise ProvisionError(f"cluster {state.name!r} does not exist")
