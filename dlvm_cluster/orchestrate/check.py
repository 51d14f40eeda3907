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

A node fails on any problem found; a link under half the median names the node it leaves
from (or arrives at) with the likely cause. `require_healthy` is what a job with
`check: true` (and a recovery that replaced a node) calls before starting.
"""

from __future__ import annotations

import dataclasses
import statistics
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dlvm_cluster import nodeside
from dlvm_cluster.errors import RemoteError
from dlvm_cluster.inventory import Inventory, Node, node_dir
from dlvm_cluster.launch.environment import node_environment
from dlvm_cluster.launch.planners import plan_launch
from dlvm_cluster.orchestrate.check_output import (
    SECTION,
    Collected,
    GpuReport,
    Xid,
    first,
    number,
    parse_cuda_version,
    parse_gpus,
    parse_xids,
    results,
    sections,
    short,
)
from dlvm_cluster.orchestrate.jobs import new_job_id, random_port
from dlvm_cluster.orchestrate.records import applied_spec, open_pool, require_inventory
from dlvm_cluster.progress import Progress
from dlvm_cluster.remote.command import wrap
from dlvm_cluster.remote.connection import Connection
from dlvm_cluster.remote.fanout import each_its_own, run_on_nodes
from dlvm_cluster.remote.pool import SshPool, for_each_node
from dlvm_cluster.shell import quote_path
from dlvm_cluster.state import ClusterState

PROGRAM = "netcheck"
PROBE_TIMEOUT_S = 90.0  # a node's probe (imports torch, asks nvidia-smi) ends by then
GROUP_TIMEOUT_S = 60  # torch.distributed's timeout for any one operation of the test
BANDWIDTH_TIMEOUT_S = 240.0  # the whole bandwidth run, torch imports included
SLOW_FRACTION = 0.5  # a link under this fraction of the median is slow
SLOW_LOOKUP_S = 1.0  # a name lookup slower than this waits on a resolver
GPU_FIELDS = (
    "index,pci.bus_id,name,driver_version,ecc.errors.uncorrected.volatile.total,"
    "remapped_rows.pending,remapped_rows.failure"
)
GPU_FIELDS_OLD = "index,pci.bus_id,name,driver_version,ecc.errors.uncorrected.volatile.total"
GB = 1e9


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
class NodeFacts:
    """What one node's probe said."""

    name: str
    python: Mapping[str, Any] | None  # the program's python result; None: it did not run
    python_output: tuple[str, ...]  # its other lines (an error, a traceback)
    names: Mapping[str, Any] | None
    nvidia_smi: bool
    gpus: GpuReport
    cuda: str
    xids: tuple[Xid, ...]
    error: str = ""  # the node could not be reached or the probe did not finish

    @property
    def torch_works(self) -> bool:
        return bool(self.python) and not (self.python or {}).get("error") and not self.error


def read_facts(name: str, lines: Sequence[str], error: str = "") -> NodeFacts:
    found = results(lines)
    parts = sections(lines)
    gpu_lines = parts.get("gpus")
    return NodeFacts(
        name=name,
        python=first(found, "python"),
        python_output=tuple(parts.get("python", [])[-8:]),
        names=first(found, "names"),
        nvidia_smi=gpu_lines is not None,
        gpus=parse_gpus(gpu_lines) if gpu_lines is not None else GpuReport((), ""),
        cuda=parse_cuda_version(parts.get("cuda", [])),
        xids=parse_xids(parts.get("xid", [])),
        error=error,
    )


@dataclass(frozen=True)
class Verdict:
    """One check on one node: what it found, and what is wrong ("" when nothing)."""

    summary: str
    problems: tuple[str, ...] = ()


def judge_python(facts: NodeFacts) -> Verdict:
    if facts.error:
        return Verdict("not checked", (facts.error,))
    if facts.python is None:
        said = "; ".join(short(line) for line in facts.python_output[-3:]) or "no output"
        return Verdict("broken", (f"python3 does not run the check program: {said}",))
    version = short(str(facts.python.get("python", "?")), 16)
    if facts.python.get("error"):
        error = short(str(facts.python["error"]))
        return Verdict(f"{version}, no torch", (f"torch does not import: {error}",))
    return Verdict(f"{version}, torch {short(str(facts.python.get('torch', '?')), 32)}")


def judge_gpus(
    facts: NodeFacts, expected: int, usual_driver: str = "", usual_cuda: str = ""
) -> Verdict:
    """GPU count against what the cluster was made with; health; versions against the
    versions most nodes have (`usual_*`: "" when there is no majority to compare with)."""
    if facts.error:
        return Verdict("not checked")
    if not facts.nvidia_smi:
        if expected:
            return Verdict(
                "none", (f"no nvidia-smi, {expected} GPU(s) expected: is the driver installed?",)
            )
        return Verdict("none")
    report = facts.gpus
    problems = [report.problem] if report.problem else []
    drivers = sorted({gpu.driver for gpu in report.gpus})
    driver = ",".join(drivers)
    if expected and len(report.gpus) != expected:
        problems.append(f"{len(report.gpus)} GPU(s) visible, {expected} expected")
    for gpu in report.gpus:
        if gpu.ecc_uncorrected:
            problems.append(f"GPU {gpu.index}: {gpu.ecc_uncorrected} uncorrected ECC error(s)")
        if gpu.remap_failure:
            problems.append(f"GPU {gpu.index}: row remapping failed: the GPU needs replacing")
        elif gpu.remap_pending:
            problems.append(f"GPU {gpu.index}: rows wait for remapping: reset the GPU or reboot")
    critical = sorted({f"{xid.code} ({xid.device})" for xid in facts.xids if xid.critical})
    if critical:
        problems.append("critical Xid error(s) in the kernel log: " + ", ".join(critical))
    if usual_driver and driver and driver != usual_driver:
        problems.append(f"driver {driver}, other nodes have {usual_driver}")
    if usual_cuda and facts.cuda and facts.cuda != usual_cuda:
        problems.append(f"CUDA {facts.cuda}, other nodes have {usual_cuda}")
    python = facts.python or {}
    if report.gpus and python.get("torch") and not python.get("cuda_available"):
        problems.append(f"torch {short(str(python['torch']), 32)} cannot use the GPUs")
    names = sorted({gpu.name for gpu in report.gpus})
    summary = f"{len(report.gpus)} x {', '.join(names) or '?'}"
    if driver:
        summary += f", driver {driver}"
    if facts.cuda:
        summary += f", CUDA {facts.cuda}"
    return Verdict(summary, tuple(problems))


def usual(values: Sequence[str]) -> str:
    """The value most nodes share, when more than half do ("" otherwise)."""
    present = [value for value in values if value]
    if not present:
        return ""
    value, count = Counter(present).most_common(1)[0]
    return value if count * 2 > len(present) else ""


def judge_names(facts: NodeFacts) -> Verdict:
    """Its hostname resolves to an address peers can reach, and every node's address (as
    IPv4 and as ::ffff:IPv4) resolves back at once, as torch's c10d asks."""
    if facts.error or facts.python is None:
        return Verdict("not checked")
    names = facts.names or {}
    problems = []
    hostname = short(str(names.get("hostname", "?")), 64)
    address = str(names.get("hostname_address", ""))
    if names.get("hostname_error"):
        problems.append(f"its hostname {hostname} does not resolve")
    elif address.startswith("127.") or address == "::1":
        problems.append(
            f"its hostname {hostname} resolves to {short(address, 40)}: gloo and NCCL would "
            "give peers a loopback address (map the hostname to the node's IP in /etc/hosts)"
        )
    lookups = names.get("lookups")
    failed, slow = [], []
    for lookup in lookups if isinstance(lookups, list) else []:
        if not isinstance(lookup, dict):
            continue
        where = short(str(lookup.get("address", "?")), 48)
        seconds = number(lookup.get("seconds"))
        if lookup.get("error"):
            failed.append(f"{where} ({short(str(lookup['error']), 60)})")
        elif seconds is not None and seconds > SLOW_LOOKUP_S:
            slow.append(f"{where} ({seconds:.1f}s)")
    if failed:
        problems.append(
            "reverse lookups fail: " + ", ".join(failed[:4]) + ": torch's c10d warns and waits "
            "on the resolver at every start; give every node's address, and its ::ffff: form, "
            "a name in /etc/hosts, or fix the resolver"
        )
    if slow:
        problems.append("slow reverse lookups: " + ", ".join(slow[:4]))
    return Verdict("ok" if not problems else "failing", tuple(problems))


@dataclass(frozen=True)
class LinkSpeeds:
    """Measured links (sender, receiver) -> GB/s, and what they say of each node.

    A node's sending speed is its best outgoing link, its receiving speed its best incoming
    one: low only when every link from (or to) it is slow, which a slow peer alone cannot
    cause. Each is compared with the median of all nodes' (a median over links would sink
    when one node's links are most of them: 4 of 6 with three nodes)."""

    links: Mapping[tuple[str, str], float]

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(end for link in sorted(self.links) for end in link))

    def sending(self, node: str) -> float | None:
        speeds = [speed for (src, _), speed in self.links.items() if src == node]
        return max(speeds) if speeds else None

    def receiving(self, node: str) -> float | None:
        speeds = [speed for (_, dst), speed in self.links.items() if dst == node]
        return max(speeds) if speeds else None

    def _median(self, way: Callable[[str], float | None]) -> float | None:
        values = [value for node in self.nodes if (value := way(node)) is not None]
        return statistics.median(values) if values else None

    @property
    def median(self) -> float | None:
        """The median node speed (the lesser of its sending and receiving), for display."""
        values = [
            min(send, receive)
            for node in self.nodes
            if (send := self.sending(node)) is not None
            and (receive := self.receiving(node)) is not None
        ]
        return statistics.median(values) if values else None

    def judge(self, node: str) -> tuple[str, ...]:
        problems = []
        two = len(self.nodes) == 2
        for way, speeds, cause in (
            ("sends", self.sending, "its NIC, its link, or a traffic shaper on it"),
            ("receives", self.receiving, "its NIC, its link, or a shaper on its input"),
        ):
            speed, median = speeds(node), self._median(speeds)
            if speed is None or not median or speed >= SLOW_FRACTION * median:
                continue
            problem = (
                f"{way} at {speed:.3g} GB/s, under half the median node's {median:.3g} GB/s: "
                f"{cause}"
            )
            if two:
                problem += " (with two nodes the check cannot tell which end is slow)"
            problems.append(problem)
        return tuple(problems)


def link_speeds(
    ordered: Sequence[str], found: Mapping[str, Sequence[Mapping[str, Any]]]
) -> LinkSpeeds:
    """Each receiver's link results -> link speeds. A node reports only links into itself:
    the sender is the node `shift` places back in `ordered` (the order torchrun ranked
    them), whatever else its output claims. Several processes of a node (one per GPU) each
    carry their share of the link: their speeds add up."""
    links: dict[tuple[str, str], float] = {}
    count = len(ordered)
    for index, name in enumerate(ordered):
        for item in found.get(name, ()):
            if item.get("kind") != "link":
                continue
            shift, size, seconds = item.get("shift"), number(item.get("bytes")), None
            seconds = number(item.get("seconds"))
            if not isinstance(shift, int) or isinstance(shift, bool) or not 0 < shift < count:
                continue
            if not size or not seconds:
                continue
            link = (ordered[(index - shift) % count], name)
            links[link] = links.get(link, 0.0) + size / seconds / GB
    return LinkSpeeds(links)


def bus_bandwidth(found: Mapping[str, Sequence[Mapping[str, Any]]]) -> tuple[str, float | None]:
    """The all_reduce's backend and bus bandwidth (GB/s, as nccl-tests counts it), from the
    median of the processes' timings."""
    timings, backend = [], ""
    for items in found.values():
        for item in items:
            if item.get("kind") != "allreduce":
                continue
            size, seconds, world = (number(item.get(k)) for k in ("bytes", "seconds", "world"))
            if size and seconds and world and world >= 2:
                timings.append(size / seconds * 2 * (world - 1) / world / GB)
                backend = backend or ("nccl" if item.get("backend") == "nccl" else "gloo")
    return backend, statistics.median(timings) if timings else None


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


def _commands(
    inventory: Inventory, nodes: Sequence[Node], text: Mapping[str, str], env: Mapping[str, str]
) -> list[str]:
    return [
        wrap(text[node.name], node_environment(inventory, node, env), cluster=inventory.cluster)
        for node in nodes
    ]


def _measure(
    pool: SshPool, inventory: Inventory, nodes: Sequence[Node], env: Mapping[str, str]
) -> tuple[_Run, tuple[Node, ...]]:
    """The bandwidth program under torchrun on `nodes`, planned as a torchrun job is."""
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
    return _run(pool, ordered, commands, timeout=BANDWIDTH_TIMEOUT_S, fail_fast=True), ordered


def run_check(
    state: ClusterState, progress: Progress, *, selector: str | None = None
) -> CheckReport:
    """Check the selected nodes (every node by default); never raises for what it finds."""
    inventory = require_inventory(state)
    nodes = inventory.select(selector)
    env = applied_spec(state).spec.plain_env()
    with open_pool(state, inventory) as pool:
        progress.stage(f"checking {len(nodes)} node(s): Python, torch, names, GPUs")
        unreachable = _install(pool, inventory, nodes)
        probed = [node for node in nodes if node.name not in unreachable]
        text = dict.fromkeys((node.name for node in probed), probe_command(inventory.cluster))
        commands = _commands(inventory, probed, text, env)
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
        able = [
            node for node in nodes if facts[node.name].torch_works and not gpus[node.name].problems
        ]
        notes: list[str] = []
        measured = _Run()
        ordered: tuple[Node, ...] = ()
        if len(able) >= 2:
            progress.stage(f"measuring bandwidth between {len(able)} node(s)")
            measured, ordered = _measure(pool, inventory, able, env)
            left_out = [node.name for node in nodes if node not in able]
            if left_out:
                notes.append(f"bandwidth measured without {', '.join(left_out)} (failed above)")
        elif len(nodes) >= 2:
            notes.append("bandwidth not measured: fewer than two nodes passed the other checks")
    found = {node.name: results(measured.of(node.name)) for node in ordered}
    speeds = link_speeds([node.name for node in ordered], found)
    backend, bus = bus_bandwidth(found)
    return CheckReport(
        cluster=inventory.cluster,
        nodes=_judge(nodes, facts, gpus, speeds, measured, ordered),
        backend=backend,
        bus_gbs=bus,
        median_gbs=speeds.median,
        notes=tuple(notes),
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
    speeds: LinkSpeeds,
    measured: _Run,
    ordered: Sequence[Node],
) -> tuple[NodeCheck, ...]:
    took_part = {node.name for node in ordered}
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


def require_healthy(state: ClusterState, progress: Progress) -> CheckReport:
    """Run the check on every node; raise (naming each failing node and why) unless all
    pass. What a job with `check: true` calls before it starts, and a recovery after it
    replaced a node."""
    report = run_check(state, progress)
    if report.ok:
        return report
    lines = [f"  {node.name}: {'; '.join(node.problems)}" for node in report.failed]
    raise RemoteError(
        f"the cluster check failed on {len(report.failed)} of {len(report.nodes)} node(s):\n"
        + "\n".join(lines),
        hint=f"see `dlvm check {state.name}`; fix or replace the node, then launch again",
    )
