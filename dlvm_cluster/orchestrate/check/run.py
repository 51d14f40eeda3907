"""`dlvm check`: prove a cluster fit for training before it burns GPU hours.

Two rounds, on every selected node at once:
1. a probe: the node's python3 and torch (the node program nodeside/netcheck.py, `probe`),
   its name lookups both ways (torch's c10d waits on a resolver that does not answer), and
   where nvidia-smi exists its GPUs: count, driver and CUDA versions (alike on every node),
   uncorrected ECC errors, rows waiting for or failing remapping, and critical Xid errors in
   the kernel log;
2. bandwidth, on the nodes whose torch works: the same program under torchrun, planned by the
   torchrun launcher as a job would be (NCCL on GPUs, gloo on CPU), measuring each node's
   links to its neighbours and an all_reduce across all (see the program's docstring).

A node fails on any problem found (the verdicts are check_verdicts.py's); a node whose links
are under half the median is named with the likely cause once a second run agrees (a node
paused for a moment is not slow). `require_healthy` is what a job with `check: true` (and a
recovery that replaced a node) calls before starting.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from dlvm_cluster import nodeside
from dlvm_cluster.errors import RemoteError
from dlvm_cluster.inventory import Inventory, Node, node_dir
from dlvm_cluster.launch.environment import node_environment
from dlvm_cluster.launch.plan import new_job_id, random_port
from dlvm_cluster.launch.planners import plan_launch
from dlvm_cluster.orchestrate.check.output import SECTION, Collected, results, short
from dlvm_cluster.orchestrate.check.verdicts import (
    LinkSpeeds,
    NodeFacts,
    TransportReader,
    Verdict,
    bus_bandwidth,
    judge_gpus,
    judge_names,
    judge_python,
    link_speeds,
    read_facts,
    transport_problems,
    transport_used,
    usual,
)
from dlvm_cluster.orchestrate.cluster.context import Cluster
from dlvm_cluster.progress import Progress
from dlvm_cluster.remote.command import wrap
from dlvm_cluster.remote.connection import Connection
from dlvm_cluster.remote.fanout import each_its_own, run_on_nodes
from dlvm_cluster.remote.pool import SshPool, for_each_node
from dlvm_cluster.shell import quote_path

PROGRAM = "netcheck"
PROBE_TIMEOUT_S = 90.0  # a node's probe (imports torch, asks nvidia-smi) ends by then
GROUP_TIMEOUT_S = 60  # torch.distributed's timeout for any one operation of the test
BANDWIDTH_TIMEOUT_S = 240.0  # the whole bandwidth run, torch imports included
GPU_FIELDS = (
    "index,pci.bus_id,name,driver_version,ecc.errors.uncorrected.volatile.total,"
    "remapped_rows.pending,remapped_rows.failure"
)
GPU_FIELDS_OLD = "index,pci.bus_id,name,driver_version,ecc.errors.uncorrected.volatile.total"


def program_path(cluster: str) -> str:
    return f"{node_dir(cluster)}/check/{PROGRAM}.py"


def install_command(cluster: str) -> str:
    """Writes stdin as the node program, atomically."""
    path = quote_path(program_path(cluster))
    folder = quote_path(f"{node_dir(cluster)}/check")
    return f"umask 077; mkdir -p {folder} && cat > {path}.tmp && mv {path}.tmp {path}"


def probe_command(cluster: str) -> str:
    """Shell text: the node program's probe, then nvidia-smi's sections where it exists."""
    program = quote_path(program_path(cluster))
    return (
        f"echo '{SECTION}python'; python3 {program} probe 2>&1; "
        "if command -v nvidia-smi >/dev/null 2>&1; then "
        f"echo '{SECTION}gpus'; "
        f"out=$(timeout 30 nvidia-smi --query-gpu={GPU_FIELDS} --format=csv,nounits 2>&1) || "
        f"out=$(timeout 30 nvidia-smi --query-gpu={GPU_FIELDS_OLD} --format=csv,nounits 2>&1); "
        "printf '%s\\n' \"$out\" | head -n 80; "
        f"echo '{SECTION}cuda'; timeout 30 nvidia-smi 2>&1 | grep -m 1 'CUDA Version'; "
        f"echo '{SECTION}xid'; {{ dmesg 2>/dev/null || sudo -n dmesg 2>/dev/null; }} "
        "| grep 'NVRM: Xid' | tail -n 20; "
        "fi; true"
    )


@dataclass(frozen=True)
class NodeCheck:
    name: str
    rank: int
    python: str
    gpus: str
    names: str
    send_gbs: float | None
    receive_gbs: float | None
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class CheckReport:
    cluster: str
    nodes: tuple[NodeCheck, ...]
    backend: str  # of the bandwidth test: nccl | gloo | "" (not run)
    bus_gbs: float | None
    median_gbs: float | None
    notes: tuple[str, ...] = ()
    # The network the bandwidth test ran on: "NCCL over Socket", "NCCL over GPUDirectTCPX",
    # "gloo over TCP"; "" when not measured.
    transport: str = ""

    @property
    def ok(self) -> bool:
        return all(node.ok for node in self.nodes)

    @property
    def failed(self) -> tuple[NodeCheck, ...]:
        return tuple(node for node in self.nodes if not node.ok)


@dataclass
class _Run:
    """What one fan-out collected: each node's lines and, where it did not finish, why."""

    lines: dict[str, Collected] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sink(self, node: Node, stream: str, text: str) -> None:
        with self.lock:
            self.lines.setdefault(node.name, Collected()).add(text)

    def of(self, name: str) -> list[str]:
        collected = self.lines.get(name)
        return collected.lines if collected else []


def _run(
    pool: SshPool,
    nodes: Sequence[Node],
    commands: Sequence[str],
    *,
    timeout: float,
    fail_fast: bool = False,
) -> _Run:
    """commands[i] on nodes[i]. With `fail_fast` (ranks of one torch job, whose peers would
    wait for a dead one until their timeout) the first node to fail stops the others, and
    only it is reported as failed."""
    collected = _Run()
    result = run_on_nodes(
        pool,
        nodes,
        each_its_own(nodes, commands),
        sink=collected.sink,
        timeout=timeout,
        fail_fast=fail_fast,
    )
    for item in result.results:
        if not item.ok:
            collected.errors[item.node] = item.describe()
    if result.first_failed:
        collected.errors = {result.first_failed: collected.errors.get(result.first_failed, "")}
    return collected


def _everywhere(
    inventory: Inventory, nodes: Sequence[Node], command: str, env: Mapping[str, str]
) -> list[str]:
    """`command` for each node, with the environment every dlvm command gets there."""
    return [
        wrap(command, node_environment(inventory, node, env), cluster=inventory.cluster)
        for node in nodes
    ]


@dataclass(frozen=True)
class Measurement:
    """One run of the bandwidth program (or the best of two): who took part, in torchrun's
    rank order, what each node printed and where it failed, and what that says."""

    run: _Run = field(default_factory=_Run)
    ordered: tuple[Node, ...] = ()
    speeds: LinkSpeeds = field(default_factory=lambda: LinkSpeeds({}))
    backend: str = ""
    bus_gbs: float | None = None
    transport: str = ""
    # Per node, the provider's objections to the network NCCL used (its GPU network unused).
    network_problems: Mapping[str, Sequence[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, run: _Run, ordered: tuple[Node, ...], read: TransportReader) -> Measurement:
        found = {node.name: results(run.of(node.name)) for node in ordered}
        backend, bus = bus_bandwidth(found)
        speeds = link_speeds([node.name for node in ordered], found)
        return cls(
            run=run,
            ordered=ordered,
            speeds=speeds,
            backend=backend,
            bus_gbs=bus,
            transport=transport_used(backend, found, read),
            network_problems=transport_problems(found, read) if backend == "nccl" else {},
        )

    def slow_nodes(self) -> list[str]:
        if self.run.errors:
            return []
        return [node.name for node in self.ordered if self.speeds.judge(node.name)]

    def best_with(self, other: Measurement) -> Measurement:
        """Each link at its better speed of the two runs (a failed second run: this one)."""
        if other.run.errors or other.ordered != self.ordered:
            return self
        links = dict(self.speeds.links)
        for link, speed in other.speeds.links.items():
            links[link] = max(speed, links.get(link, 0.0))
        buses = [bus for bus in (self.bus_gbs, other.bus_gbs) if bus is not None]
        return dataclasses.replace(
            self, speeds=LinkSpeeds(links), bus_gbs=max(buses) if buses else None
        )


def _measure(
    pool: SshPool,
    inventory: Inventory,
    nodes: Sequence[Node],
    env: Mapping[str, str],
    read: TransportReader,
) -> Measurement:
    """The bandwidth program under torchrun on `nodes`, planned as a torchrun job is; the
    network NCCL used as `read` (the provider) reads it."""
    from dlvm_cluster.spec.model import Job  # pydantic, as every launch plans with it

    subset = dataclasses.replace(inventory, nodes=tuple(nodes))
    job = Job(
        framework="torchrun",
        command=f"{program_path(inventory.cluster)} bandwidth {GROUP_TIMEOUT_S}",
    )
    plan = plan_launch(job, subset, job_id=f"check-{new_job_id()}", port=random_port())
    launches = {launch.node.name: launch for launch in plan.launches}
    ordered = tuple(launch.node for launch in plan.launches)
    commands = [
        wrap(
            launches[node.name].command,
            {**node_environment(subset, node, env), **launches[node.name].env},
            cluster=inventory.cluster,
        )
        for node in ordered
    ]
    run = _run(pool, ordered, commands, timeout=BANDWIDTH_TIMEOUT_S, fail_fast=True)
    return Measurement.of(run, ordered, read)


def run_check(cluster: Cluster, progress: Progress, *, selector: str | None = None) -> CheckReport:
    """Check the selected nodes (every node by default); never raises for what it finds."""
    inventory = cluster.require_inventory()
    nodes = inventory.select(selector)
    env = cluster.require_applied().spec.plain_env()
    pool = cluster.pool()
    progress.stage(f"checking {len(nodes)} node(s): Python, torch, names, GPUs")
    unreachable = _install(pool, inventory, nodes)
    probed = [node for node in nodes if node.name not in unreachable]
    commands = _everywhere(inventory, probed, probe_command(inventory.cluster), env)
    probe = _run(pool, probed, commands, timeout=PROBE_TIMEOUT_S)
    facts = {
        node.name: read_facts(
            node.name,
            probe.of(node.name),
            unreachable.get(node.name) or probe.errors.get(node.name, ""),
        )
        for node in nodes
    }
    gpus = _gpu_verdicts(inventory, facts)
    # A node whose torch or GPUs fail has failed already, and would stop (or hang) the
    # torch job the others measure their links with: it is left out.
    able = [node for node in nodes if facts[node.name].torch_works and not gpus[node.name].problems]
    notes: list[str] = []
    measured = Measurement()
    if len(able) >= 2:
        progress.stage(f"measuring bandwidth between {len(able)} node(s)")
        read = cluster.provider.read_transport
        measured = _measure(pool, inventory, able, env, read)
        if measured.slow_nodes():
            # A node paused by its machine (another process, a noisy neighbour) looks
            # slow for a moment; a slow link stays slow: only what is slow twice counts.
            progress.stage("measuring again: a link must be slow twice to fail a node")
            measured = measured.best_with(_measure(pool, inventory, able, env, read))
        left_out = [node.name for node in nodes if node not in able]
        if left_out:
            notes.append(f"bandwidth measured without {', '.join(left_out)} (failed above)")
    elif len(nodes) >= 2:
        notes.append("bandwidth not measured: fewer than two nodes passed the other checks")
    return CheckReport(
        cluster=inventory.cluster,
        nodes=_judge(nodes, facts, gpus, measured),
        backend=measured.backend,
        bus_gbs=measured.bus_gbs,
        median_gbs=measured.speeds.median,
        notes=tuple(notes),
        transport=measured.transport,
    )


def _install(pool: SshPool, inventory: Inventory, nodes: Sequence[Node]) -> dict[str, str]:
    """Put the node program on `nodes`; the nodes where that failed, with why."""
    script, program = install_command(inventory.cluster), nodeside.source(PROGRAM)

    def one(connection: Connection) -> str:
        code, _, err = connection.run(script, stdin=program)
        return "" if code == 0 else f"cannot install the check program: {short(err.strip())}"

    problems = for_each_node(pool, nodes, one, lambda node, error: f"unreachable: {error}")
    return {node.name: problem for node, problem in zip(nodes, problems, strict=True) if problem}


def _gpu_verdicts(inventory: Inventory, facts: Mapping[str, NodeFacts]) -> dict[str, Verdict]:
    """Each node's GPUs, its versions held against those most nodes have."""
    drivers = [",".join(sorted({gpu.driver for gpu in fact.gpus.gpus})) for fact in facts.values()]
    usual_driver = usual(drivers)
    usual_cuda = usual([fact.cuda for fact in facts.values()])
    return {
        name: judge_gpus(fact, inventory.gpus_per_node, usual_driver, usual_cuda)
        for name, fact in facts.items()
    }


def _judge(
    nodes: Sequence[Node],
    facts: Mapping[str, NodeFacts],
    gpu_verdicts: Mapping[str, Verdict],
    measurement: Measurement,
) -> tuple[NodeCheck, ...]:
    speeds, measured = measurement.speeds, measurement.run
    took_part = {node.name for node in measurement.ordered}
    checks = []
    for node in nodes:
        fact = facts[node.name]
        python = judge_python(fact)
        gpus = gpu_verdicts[node.name]
        names = judge_names(fact)
        problems = [*python.problems, *gpus.problems, *names.problems]
        if node.name in measured.errors:
            tail = "; ".join(short(line) for line in measured.of(node.name)[-3:])
            problems.append(
                f"the bandwidth test failed here ({measured.errors[node.name]}): {tail}"
            )
        elif node.name in took_part:
            if speeds.receiving(node.name) is None and not measured.errors:
                problems.append("the bandwidth test ran but this node reported no link")
            problems.extend(speeds.judge(node.name))
            problems.extend(measurement.network_problems.get(node.name, ()))
        checks.append(
            NodeCheck(
                name=node.name,
                rank=node.rank,
                python=python.summary,
                gpus=gpus.summary,
                names=names.summary,
                send_gbs=speeds.sending(node.name),
                receive_gbs=speeds.receiving(node.name),
                problems=tuple(problems),
            )
        )
    return tuple(checks)


def require_healthy(cluster: Cluster, progress: Progress) -> CheckReport:
    """Run the check on every node; raise (naming each failing node and why) unless all
    pass. What a job with `check: true` calls before it starts, and a recovery after it
    replaced a node."""
    report = run_check(cluster, progress)
    if report.ok:
        return report
    lines = [f"  {node.name}: {'; '.join(node.problems)}" for node in report.failed]
    raise RemoteError(
        f"the cluster check failed on {len(report.failed)} of {len(report.nodes)} node(s):\n"
        + "\n".join(lines),
        hint=f"see `dlvm check {cluster.name}`; fix or replace the node, then launch again",
    )
