"""Launch plans as plain values, and what every framework's planner builds them from.

`plan_launch` (launch/__init__.py) makes one JobLayout for the job (its nodes, processes,
port, id and environment) and hands it to the job's framework module, whose `plan(job,
layout)` returns a LaunchPlan; the framework modules take their types and helpers from here.
The environment every job process gets is described in launch/__init__.py.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from dlvm_cluster.errors import UsageError
from dlvm_cluster.inventory import Inventory, Node, node_dir
from dlvm_cluster.launch.environment import node_environment
from dlvm_cluster.shell import ShellText, join, quote_path
from dlvm_cluster.spec.model import Job

NO_ENV: Mapping[str, object] = MappingProxyType({})
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_INTERPRETER = re.compile(r"(?:\S*/)?python[0-9.]*\s+")


@dataclass(frozen=True)
class NodeLaunch:
    """What to run on one node: shell text for its workdir, and env added to the node's."""

    node: Node
    command: str
    env: dict[str, str]


@dataclass(frozen=True)
class HostFile:
    """A file the caller writes on every node before any launch starts (`~` is the home)."""

    path: str
    content: str


@dataclass(frozen=True)
class LaunchPlan:
    """Everything that starts one job: files first, on every node, then the launches (one
    per node, or the head's alone for launchers that reach the other nodes over SSH)."""

    job_id: str
    launches: tuple[NodeLaunch, ...]
    files: tuple[HostFile, ...]


def procs_per_node(job: Job, inventory: Inventory) -> int:
    """`procs_per_node`, with auto resolved: one process per GPU, or one without GPUs."""
    if job.procs_per_node == "auto":
        return inventory.gpus_per_node or 1
    return job.procs_per_node


def elastic_range(job: Job) -> tuple[int, int] | None:
    """(MIN, MAX) for `nnodes: "MIN:MAX"`; None for a job of a fixed number of nodes."""
    if job.nnodes is None or ":" not in job.nnodes:
        return None
    low, high = job.nnodes.split(":")
    return int(low), int(high)


def job_nodes(job: Job, inventory: Inventory) -> tuple[Node, ...]:
    """The nodes a job runs on: every node, or the first N for `nnodes: N`."""
    nodes = inventory.nodes
    span = elastic_range(job)
    if span is not None:
        low, high = span
        if not 1 <= low <= high:
            raise UsageError(
                f'job.nnodes "{job.nnodes}" is not a range',
                hint='give MIN:MAX with 1 <= MIN <= MAX, for example "1:4"',
            )
        if len(nodes) > high:
            raise UsageError(
                f'job.nnodes "{job.nnodes}" allows at most {high} nodes; the cluster has '
                f"{len(nodes)}",
                hint=f"raise MAX to {len(nodes)} or scale the cluster down",
            )
        return nodes
    if job.nnodes is None:
        return nodes
    wanted = int(job.nnodes)
    if not 1 <= wanted <= len(nodes):
        raise UsageError(
            f"job.nnodes is {wanted}; the cluster has {len(nodes)} nodes",
            hint=f"give 1 to {len(nodes)}, or scale the cluster first (`dlvm scale`)",
        )
    return nodes[:wanted]


def hostfile_path(cluster: str, job_id: str) -> str:
    """Where a job's hostfile lives on every node (documented for users' own launchers): in
    the job's folder, under the cluster's own folder on the node."""
    return f"{node_dir(cluster)}/jobs/{job_id}/hostfile"


@dataclass(frozen=True)
class JobLayout:
    """What every framework's plan starts from: the job's nodes, processes and env. Made once
    per job by `job_layout`; a planner gets this and the job, nothing else."""

    cluster: str
    job_id: str
    port: int
    nodes: tuple[Node, ...]
    procs_per_node: int
    node_env_names: tuple[str, ...]
    """The names of the variables a node gives every job process besides the launch's own:
    the provider's env, the cluster file's env and the DLVM_* contract."""

    @property
    def head(self) -> Node:
        return self.nodes[0]

    @property
    def world_size(self) -> int:
        return self.procs_per_node * len(self.nodes)

    @property
    def hosts(self) -> str:
        """`ip:slots,...` as horovodrun and mpirun take with -H."""
        return ",".join(f"{node.ip}:{self.procs_per_node}" for node in self.nodes)

    @property
    def forwarded_env(self) -> tuple[str, ...]:
        """The names a launcher that starts processes on other nodes from the head (mpirun -x)
        must forward, since those do not inherit the head's environment: the node's
        variables, the launch's, DLVM_HOSTFILE and PATH. Not DLVM_NODE_RANK, which would be
        the head's everywhere."""
        names = [*self.node_env_names, *self.env(), "DLVM_HOSTFILE", "PATH"]
        return tuple(name for name in dict.fromkeys(names) if name != "DLVM_NODE_RANK")

    def env(self) -> dict[str, str]:
        """The variables every launch adds to the node's environment (see the module doc)."""
        return {
            "MASTER_ADDR": self.head.ip,
            "MASTER_PORT": str(self.port),
            "DLVM_JOB_ID": self.job_id,
            "DLVM_PROCS_PER_NODE": str(self.procs_per_node),
            "DLVM_WORLD_SIZE": str(self.world_size),
            "PYTHONUNBUFFERED": "1",
        }

    def hostfile(self) -> HostFile:
        lines = "".join(f"{node.ip} slots={self.procs_per_node}\n" for node in self.nodes)
        return HostFile(path=hostfile_path(self.cluster, self.job_id), content=lines)

    def command(self, argv: Sequence[str]) -> str:
        """Shell text for one launch: export DLVM_HOSTFILE, then run `argv`."""
        path = quote_path(hostfile_path(self.cluster, self.job_id))
        return f"export DLVM_HOSTFILE={path} && {join(argv)}"

    def plan(self, launches: Sequence[NodeLaunch]) -> LaunchPlan:
        return LaunchPlan(job_id=self.job_id, launches=tuple(launches), files=(self.hostfile(),))

    def on_each_node(
        self, argv_for: Callable[[int, Node], Sequence[str]], env: Mapping[str, str] | None = None
    ) -> LaunchPlan:
        """A launcher on every node of the job: `argv_for(index, node)` gives its words."""
        env = self.env() if env is None else env
        return self.plan(
            [
                NodeLaunch(node=node, command=self.command(argv_for(index, node)), env=dict(env))
                for index, node in enumerate(self.nodes)
            ]
        )

    def on_head(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> LaunchPlan:
        """One launcher on the head that starts the processes on every node itself."""
        env = self.env() if env is None else env
        return self.plan([NodeLaunch(node=self.head, command=self.command(argv), env=dict(env))])


def job_layout(
    job: Job,
    inventory: Inventory,
    *,
    job_id: str,
    port: int,
    spec_env: Mapping[str, object] = NO_ENV,
) -> JobLayout:
    """The layout every planner starts from; a bad job id or port is a caller's bug. Of
    `spec_env` (the cluster file's env) only the names are used."""
    if not _JOB_ID.fullmatch(job_id):
        raise ValueError(f"job id {job_id!r} must be letters, digits, '.', '_' or '-'")
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range")
    nodes = job_nodes(job, inventory)
    contract = node_environment(inventory, nodes[0], {})  # the provider's env and DLVM_*
    return JobLayout(
        cluster=inventory.cluster,
        job_id=job_id,
        port=port,
        nodes=nodes,
        procs_per_node=procs_per_node(job, inventory),
        node_env_names=tuple(dict.fromkeys([*inventory.env, *spec_env, *contract])),
    )


Planner = Callable[[Job, JobLayout], LaunchPlan]
"""The one function each framework module exposes: its launch plan for the job."""


HOSTFILE = ShellText('"$DLVM_HOSTFILE"')
"""The hostfile's path as a launcher's argument, expanded by the node's shell."""


@dataclass(frozen=True)
class Script:
    """job.command as a launcher that runs Python itself takes it (torchrun, deepspeed,
    accelerate): a script or, for `module`, a module name, followed by its arguments."""

    text: str
    module: bool

    def words(self, module_flag: str) -> list[str]:
        """The launcher's last words: `module_flag` for a module, then the script and args."""
        return [*([module_flag] if self.module else []), ShellText(self.text)]


def python_script(command: str) -> Script:
    """`train.py ARGS` as is; a leading `python` (or `python3`, `/path/python3.11`, with -u)
    is dropped because the launcher runs its own Python; `-m pkg ARGS` marks a module.
    Output is unbuffered anyway (PYTHONUNBUFFERED); other interpreter options are refused."""
    text = command.strip()
    interpreter = _INTERPRETER.match(text)
    if interpreter:
        text = text[interpreter.end() :]
        if text.startswith("-u "):
            text = text[3:].lstrip()
    if text.startswith("-m "):
        return Script(text=text[3:].lstrip(), module=True)
    if text.startswith("-"):
        raise UsageError(
            f"job.command {command!r}: the launcher runs Python itself and takes a script "
            "or -m MODULE, not interpreter options",
            hint="write `train.py ARGS` or `-m package.module ARGS`",
        )
    return Script(text=text, module=False)


def python_program(command: str) -> str:
    """job.command as a launcher that runs a program takes it (horovodrun, mpirun): a command
    whose first word is a `.py` script, or `-m`, gets `python3` in front."""
    text = command.strip()
    first = text.split(maxsplit=1)[0]
    return f"python3 {text}" if first.endswith(".py") or first == "-m" else text


def ssh_port(nodes: Sequence[Node]) -> int:
    """The one SSH port launchers that reach the other nodes themselves must use."""
    ports = {node.port for node in nodes}
    if len(ports) != 1:
        raise UsageError(
            f"nodes listen for SSH on different ports ({', '.join(map(str, sorted(ports)))}); "
            "this launcher starts the other nodes over SSH with one port",
            hint="give every host the same port, or use torchrun, deepspeed or accelerate",
        )
    return ports.pop()


def covering_network(nodes: Sequence[Node]) -> str | None:
    """The smallest IPv4 network holding every node's IP, e.g. `10.77.0.0/29`; None for
    loopback addresses (no interface has them) or addresses that are not IPv4."""
    try:
        addresses = [ipaddress.IPv4Address(node.ip) for node in nodes]
    except ipaddress.AddressValueError:
        return None
    if any(address.is_loopback for address in addresses):
        return None
    for prefix in range(32, -1, -1):
        network = ipaddress.IPv4Network((addresses[0], prefix), strict=False)
        if all(address in network for address in addresses):
            return str(network)
    return None  # pragma: no cover - /0 holds every address


PORT_RANGE = (20000, 30000)


def random_port() -> int:
    """A port for a job's rendezvous, drawn from PORT_RANGE: jobs started at once rarely meet."""
    return PORT_RANGE[0] + int.from_bytes(os.urandom(2), "big") % (PORT_RANGE[1] - PORT_RANGE[0])


def new_job_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)
