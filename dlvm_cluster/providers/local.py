"""The local provider: nodes are network namespaces on this machine, each with its own sshd,
made by terraform/local. Rendering picks a bridge and /24 per cluster and an address per node."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from dlvm_cluster.errors import ProvisionError, UsageError
from dlvm_cluster.inventory import Inventory, Node, from_terraform_outputs, node_name
from dlvm_cluster.progress import Progress
from dlvm_cluster.providers import checks
from dlvm_cluster.providers.base import (
    BootReadiness,
    Bound,
    CapacityFacts,
    Check,
    Converge,
    HourlyRates,
    NodeState,
    ProviderPlan,
    Reach,
    StopMark,
)
from dlvm_cluster.providers.kind import Feature, ProviderKind, Refusal
from dlvm_cluster.providers.terraformed import apply_module, destroy_module, plan_module
from dlvm_cluster.provision.modules import module_dir
from dlvm_cluster.provision.render import TFVARS, RenderedModule
from dlvm_cluster.shell import quote_path
from dlvm_cluster.spec.kinds import Problem, SpecKind
from dlvm_cluster.spec.model import ClusterSpec, ProviderConfig, StorageMount
from dlvm_cluster.spec.rules import bucket_scheme_problems
from dlvm_cluster.state import (
    ClusterState,
    list_clusters,
    private_dir,
    python_bin_dir,
    storage_root,
)

NODE_STORAGE = "/run/dlvm/storage"  # where every node sees storage_root() (terraform/local)
FIRST_HOST = 10  # node-N gets .(10+N); .1 is the bridge (the host side)
SECOND_OCTET_BASE = 200  # clusters use 10.200.0.0 - 10.249.255.0
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LOCAL_MAX_NODES = 64


class LocalConfig(ProviderConfig):
    """Nodes are network namespaces with their own sshd on this machine."""

    kind: Literal["local"]


def local_rules(spec: ClusterSpec) -> list[Problem]:
    # Its storage stands in for Cloud Storage buckets.
    problems = bucket_scheme_problems(spec, "gs", "Cloud Storage")
    if spec.nodes.count > LOCAL_MAX_NODES:
        problems.append(
            (
                ("nodes", "count"),
                f"{spec.nodes.count} is above the local provider's limit of {LOCAL_MAX_NODES}",
            )
        )
    return problems


KIND = ProviderKind(
    spec=SpecKind("local", LocalConfig, rules=local_rules),
    implementation="dlvm_cluster.providers.local:NamespaceNodes",
    lacks={Feature.PRICES: Refusal("the local provider's machines cost nothing by the hour")},
)


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
        tfvars = other.terraform_dir / TFVARS
        if tfvars.exists():
            try:
                used.add(json.loads(tfvars.read_text())["network"]["gateway_ip"])
            except (ValueError, KeyError, OSError):
                continue
    return used


def recorded_network(state: ClusterState) -> dict[str, Any] | None:
    """The network the cluster's last render chose (None: never rendered, or unreadable)."""
    try:
        existing = json.loads((state.terraform_dir / TFVARS).read_text())["network"]
        return dict(existing, veth_prefix=existing.get("veth_prefix", ""))
    except (ValueError, KeyError, OSError, TypeError):
        return None


def pick_network(state: ClusterState) -> dict[str, Any]:
    """The cluster's network: the one it already has, else the first derived one not in use."""
    existing = recorded_network(state)
    if existing is not None:
        return existing
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
        "storage_dir": str(storage_root().absolute()),
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
    as a DLVM image puts its framework environment first. They share its kernel too, so
    /proc/stat and /proc/meminfo are the machine's: DLVM_SHARED_KERNEL=1 tells the programs
    that measure a node (nodeside/metrics.py) to count the node's own processes instead."""
    return {"PATH": f"{python_bin_dir()}:{DEFAULT_PATH}", "DLVM_SHARED_KERNEL": "1"}


def storage_folder(entry: StorageMount) -> Path:
    """The host folder standing in for `entry`'s bucket: storage/BUCKET/PREFIX under
    DLVM_HOME, and never outside it (the spec refuses `..` in a prefix; this holds for a
    mount that did not come through it)."""
    root = storage_root().absolute()
    folder = Path(os.path.normpath(root / entry.bucket_name / entry.prefix))
    if not folder.is_relative_to(root / entry.bucket_name) or not entry.bucket_name:
        raise UsageError(
            f"storage {entry.bucket} would leave the storage folder {root}",
            hint="write the bucket as gs://BUCKET/PREFIX without `.` or `..` in PREFIX",
        )
    return folder


def storage_mount_script(spec: ClusterSpec) -> str:
    """POSIX shell text, run as root on a node, that bind-mounts each storage folder at its
    mount (read-only where asked). Idempotent: a mount already in place is only set ro/rw
    again; one of another folder is replaced."""
    if not spec.storage:
        return ""
    lines = [
        f"[ -d {NODE_STORAGE} ] || {{ echo 'this node was made before shared storage: "
        "replace it (dlvm down, then dlvm up)' >&2; exit 1; }"
    ]
    root = storage_root().absolute()
    for entry in spec.storage:
        source = f"{NODE_STORAGE}/{storage_folder(entry).relative_to(root)}"
        mode = "ro" if entry.read_only else "rw"
        lines.append(
            f'src={quote_path(source)}; dst={quote_path(entry.mount)}; mkdir -p "$dst"; '
            'if [ "$(stat -c %d:%i "$dst")" != "$(stat -c %d:%i "$src")" ]; then '
            'if mountpoint -q "$dst"; then umount "$dst"; fi; mount --bind "$src" "$dst"; fi; '
            f'mount -o remount,bind,{mode} "$dst"'
        )
    return "\n".join(lines) + "\n"


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


def namespaces(state: ClusterState, nodes: Iterable[str]) -> dict[str, str]:
    """node name -> its network namespace, as terraform/local names it; empty when the
    cluster was never rendered (then no node has one)."""
    network = recorded_network(state)
    if network is None:
        return {}
    prefix = network.get("veth_prefix", "")
    return {node: f"dlvm-{state.name}-{node}-{prefix}" for node in nodes}


def _init_alive(node_dir: Path) -> bool:
    """Whether the node's init process (node.sh records its PID in init.ready, and the
    namespace's identity in netns) still runs in that namespace: one readlink, where listing
    the namespace's processes reads every process of this machine (the supervisor asks
    every 2 s, and on a busy machine that scan took CPU from the job itself)."""
    try:
        pid = (node_dir / "init.ready").read_text().strip()
        identity = (node_dir / "netns").read_text().strip()
        return pid.isdigit() and os.readlink(f"/proc/{pid}/ns/net") == identity != ""
    except OSError:
        return False


def _namespace_pids(namespace: str) -> list[str]:
    """The PIDs of a namespace's processes, as `ip netns pids` names them."""
    try:
        out = subprocess.run(
            ["ip", "netns", "pids", namespace], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return out.split()


def _power(state: ClusterState, inventory: Inventory, verb: str, by: str = "") -> None:
    """Run node.sh node-stop or node-start for each node, with what it needs from the tfvars
    of the last apply (the same values Terraform gave node-up)."""
    try:
        tfvars = json.loads((state.terraform_dir / TFVARS).read_text())
    except (OSError, ValueError) as exc:
        raise ProvisionError(
            f"cluster {state.name} was never made on this machine",
            hint="create it with `dlvm up` first",
        ) from exc
    check_local_privileges()
    network = tfvars["network"]
    names = namespaces(state, (node.name for node in inventory.nodes))
    script = module_dir("local") / "node.sh"

    def one(node: Node) -> str:
        settings = tfvars["nodes"].get(node.name)
        if settings is None:
            return ""
        env = dict(
            os.environ,
            NODE=node.name,
            NODE_IP=settings["ip"],
            NAMESPACE=names[node.name],
            GATEWAY_IP=network["gateway_ip"],
            PREFIX_LEN=str(network["prefix_len"]),
            STATE_DIR=tfvars["state_dir"],
            AUTHORIZED_KEYS=tfvars["authorized_keys_file"],
            KEEP_PATHS=":".join(tfvars["keep_paths"]),
            NODE_PATH=tfvars["node_path"],
            # The host folder behind the storage mounts, seen again by the node's new init.
            STORAGE_DIR=tfvars.get("storage_dir", ""),
            STOPPED_BY=by,
        )
        done = subprocess.run(
            [str(script), f"node-{verb}"], env=env, capture_output=True, text=True, check=False
        )
        if done.returncode == 0:
            return ""
        return f"{node.name}: {done.stderr.strip() or done.stdout.strip()}"

    # Every node at once, as machines power on and off independently.
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(inventory.nodes)))) as pool:
        failed = [problem for problem in pool.map(one, inventory.nodes) if problem]
    if failed:
        raise ProvisionError(
            f"could not {verb} " + "; ".join(failed),
            hint="run `dlvm up` to converge the cluster",
        )


STOP_REASONS = frozenset({"user", "autostop", "max_hours"})
STOP_ACTIONS = frozenset({"stop", "down"})


def _stop_mark(path: Path) -> StopMark | None:
    """A node dir's `stopped` file: `by=WHO at=EPOCH [action=stop|down]`. The node writes it
    (root there may write anything): a reason or action dlvm does not use, or a time it
    cannot show, makes no mark rather than text for the terminal or a crash."""
    try:
        fields = dict(item.split("=", 1) for item in path.read_text().split() if "=" in item)
        by, at, action = fields["by"], float(fields["at"]), fields.get("action", "stop")
    except (OSError, KeyError, ValueError):
        return None
    if by not in STOP_REASONS or action not in STOP_ACTIONS:
        return None
    if not 0 <= at <= time.time() + 60:  # nan and inf fail too
        return None
    return StopMark(by=by, at=at, action=action)


# What a local node runs to power itself off: it ends every process of its own network
# namespace (compared by /proc/PID/ns/net, as `ip netns pids` does), itself last, after
# recording why in its node dir (the host's nodes/NODE, mounted at /run/dlvm/node). It runs
# only where its namespace is the one the host recorded for the node when it booted it
# (node.sh writes nodes/NODE/netns): never outside a local node, never in the host's own
# namespace. (PID 1's namespace is no reference: in a container it may be unreadable.)
SELF_STOP = (
    '[ -d /run/dlvm/node ] || { echo "not a local dlvm node" >&2; exit 1; }; '
    "me=$(readlink /proc/self/ns/net); "
    '[ -n "$me" ] && [ "$me" = "$(cat /run/dlvm/node/netns 2>/dev/null)" ] '
    '|| { echo "refusing: not the namespace this node was booted in" >&2; exit 1; }; '
    'printf "by=%s at=%s action=%s\\n" "${DLVM_STOP_REASON:-autostop}" "$(date +%s)" '
    '"${DLVM_STOP_ACTION:-stop}" '
    "> /run/dlvm/node/stopped; "
    'for p in /proc/[0-9]*; do p=${p#/proc/}; [ "$p" = $$ ] && continue; '
    '[ "$(readlink /proc/$p/ns/net 2>/dev/null)" = "$me" ] && kill -9 "$p" 2>/dev/null; '
    "done; kill -9 $$"
)


def node_address(node: str) -> str:
    """The node's resource in terraform/local, for `apply -replace`."""
    return f'terraform_data.node["{node}"]'


def _root() -> str:
    checks.need(os.geteuid() == 0, "not running as root")
    return "running as root"


def _overlay() -> str:
    checks.need("overlay" in Path("/proc/filesystems").read_text(), "the kernel has no overlayfs")
    return "overlayfs available"


def _torch() -> str:
    import importlib.util

    checks.need(importlib.util.find_spec("torch") is not None, "torch is not installed")
    return "torch importable (for the example training jobs)"


def render_local(spec: ClusterSpec, state: ClusterState) -> RenderedModule:
    return RenderedModule("local", module_dir("local"), local_tfvars(state, spec.nodes.count))


class NamespaceNodes(Bound):
    """The `local` provider (see the module docstring)."""

    owns_machines = True

    def check_host(self) -> None:
        check_local_privileges()

    def render(self) -> RenderedModule:
        return render_local(self.spec, self.state)

    def provision(self, request: Converge) -> tuple[Inventory, bool]:
        """Terraform only when needed: a healthy cluster with an unchanged spec skips it, and
        nodes that stopped answering are recreated alone."""
        module = render_local(request.spec, request.state)
        module_changed = module.write(request.state.terraform_dir)
        previous = request.previous
        if previous is not None and not module_changed and request.applied:
            request.progress.stage("checking nodes")
            broken = sorted(request.reach.unreachable(previous))
            if not broken:
                return previous, False
            request.progress.note(f"not answering, will be recreated: {', '.join(broken)}")
            return self.replace_nodes(request, broken), True
        return self._apply(module, request, []), True

    def replace_nodes(self, request: Converge, names: list[str]) -> Inventory:
        """A fresh namespace, sshd and host key for each named node; the others untouched."""
        module = render_local(request.spec, request.state)
        module.write(request.state.terraform_dir)
        return self._apply(module, request, names)

    def _apply(self, module: RenderedModule, request: Converge, replace: list[str]) -> Inventory:
        result = apply_module(
            module,
            request.state,
            request.progress,
            replace=[node_address(name) for name in replace],
        )
        accelerator = request.spec.nodes.accelerator
        return from_terraform_outputs(
            request.spec.name,
            result.outputs,
            env=local_node_env(),
            gpus_per_node=accelerator.count if accelerator else 0,
        )

    def plan(self, request: Converge) -> ProviderPlan:
        module = render_local(request.spec, request.state)
        return plan_module(module, request.state, request.progress)

    def plan_notes(self) -> list[str]:
        return []

    def storage_script(self) -> str:
        """The folders under DLVM_HOME/storage made (0700), and their bind mounts."""
        for entry in self.spec.storage:
            private_dir(storage_folder(entry))
        return storage_mount_script(self.spec)

    def destroy(self, progress: Progress) -> None:
        if (self.state.terraform_dir / TFVARS).exists():
            check_local_privileges()
        destroy_module(self.state, progress)

    def node_states(self, inventory: Inventory) -> dict[str, NodeState]:
        """A node whose namespace is gone is missing; one whose namespace holds no process
        is stopped (powered off, disk kept); else it is running (whether its sshd answers is
        for SSH to tell)."""
        names = namespaces(self.state, (node.name for node in inventory.nodes))
        states = {}
        for node in inventory.nodes:
            namespace = names.get(node.name)
            if namespace is None or not (Path("/run/netns") / namespace).exists():
                states[node.name] = NodeState.MISSING
            elif _init_alive(self.state.root / "nodes" / node.name):
                states[node.name] = NodeState.RUNNING  # its init is a process of it
            elif not _namespace_pids(namespace):
                states[node.name] = NodeState.STOPPED
            else:
                states[node.name] = NodeState.RUNNING
        return states

    def stop_nodes(self, inventory: Inventory, progress: Progress, *, by: str) -> None:
        """Every process of each node's namespace ends; the namespace and the node dir (host
        key, home, /tmp) stay for `start_nodes`."""
        progress.stage("stopping nodes")
        _power(self.state, inventory, "stop", by)

    def start_nodes(self, inventory: Inventory, progress: Progress) -> None:
        progress.stage("starting nodes")
        _power(self.state, inventory, "start")

    def stop_marks(self, inventory: Inventory) -> dict[str, StopMark]:
        marks = {}
        for node in inventory.nodes:
            mark = _stop_mark(self.state.root / "nodes" / node.name / "stopped")
            if mark is not None:
                marks[node.name] = mark
        return marks

    def self_stop_command(self, action: str) -> str | None:
        """Both actions power the node off: a namespace cannot delete itself from the inside
        (the host's `ip netns` is out of its reach); the next dlvm command on this machine
        takes a cluster stopped for `down` down (orchestrate reconciles)."""
        return SELF_STOP

    def provider_id(self, node: Node) -> str:
        return namespaces(self.state, [node.name]).get(node.name, "")

    def status_price(self, nodes: int) -> str | None:
        return None

    def boot_readiness(self) -> BootReadiness | None:
        return None

    def capacity(self) -> CapacityFacts | None:
        return None

    def hourly_rates(self) -> HourlyRates | None:
        return None  # this machine: nothing billed by the hour

    def doctor(self, reach: Reach) -> list[Check]:
        install = "apt-get install -y openssh-server openssh-client iproute2 util-linux procps"
        return [
            checks.probe("root", _root, "run dlvm as root (network namespaces and mounts need it)"),
            checks.probe("ip (iproute2)", checks.tool("ip"), install),
            checks.probe("sshd", checks.tool("sshd"), install),
            checks.probe("ssh-keygen", checks.tool("ssh-keygen"), install),
            checks.probe(
                "unshare / nsenter",
                lambda: checks.tool("unshare")() + ", " + checks.tool("nsenter")(),
                install,
            ),
            checks.probe(
                "overlayfs", _overlay, "use a kernel with overlayfs (node homes are overlays)"
            ),
            checks.terraform_check(),
            checks.probe(
                "torch",
                _torch,
                "pip install torch==2.13.0 (CPU build), or `bash examples/install.sh`",
            ),
        ]
