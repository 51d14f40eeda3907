"""What `dlvm dashboard` shows of each cluster besides its live metrics: nodes and their
machines' states, the hourly price and the spend so far, autostop's settings, and recent jobs
with their events, restarts and each node's log tail.

Read from the state dir and the provider, never over SSH (the metrics round says which nodes
answer), and never changing anything: unlike `status`, it does not finish a `down` that
autostop left to do; it says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dlvm_cluster.errors import DlvmError, StateError
from dlvm_cluster.orchestrate.cluster import autostop
from dlvm_cluster.orchestrate.cluster.context import Cluster
from dlvm_cluster.orchestrate.cluster.power import taken_down_mark
from dlvm_cluster.orchestrate.cluster.records import cluster_kind
from dlvm_cluster.orchestrate.cluster.report import usage_line
from dlvm_cluster.orchestrate.jobs.store import JobRecord
from dlvm_cluster.orchestrate.watch.metrics import log_tail
from dlvm_cluster.state import ClusterState

RECENT_JOBS = 10
EVENTS_SHOWN = 30
LOG_LINES = 30


@dataclass(frozen=True)
class NodeView:
    name: str
    rank: int
    address: str
    state: str  # as the provider sees the machine: running, stopped, ... ('' : unknown)


@dataclass(frozen=True)
class JobView:
    id: str
    framework: str
    command: str
    state: str
    started: float
    ended: float | None
    restarts: int
    recoveries: int
    nodes: tuple[str, ...]
    events: tuple[tuple[float, str], ...]
    logs: dict[str, list[str]] = field(default_factory=dict)  # node -> its last lines


@dataclass(frozen=True)
class ClusterView:
    name: str
    kind: str
    nodes: tuple[NodeView, ...] = ()
    price: str = ""
    spend: str = ""
    autostop: str = ""
    jobs: tuple[JobView, ...] = ()
    problem: str = ""  # what could not be read (the provider's states, a damaged record)


def cluster_view(state: ClusterState) -> ClusterView:
    """One cluster as the dashboard shows it; never raises for what it cannot read."""
    kind = cluster_kind(state) or ""
    cluster = Cluster(state)
    inventory = cluster.inventory
    if inventory is None:
        return ClusterView(state.name, kind, problem="no nodes recorded (never brought up)")
    provider = cluster.provider
    problems = []
    if taken_down_mark(cluster, inventory) is not None:
        problems.append("autostop took this cluster down; `dlvm status` finishes removing it")
    try:
        states = {name: str(value) for name, value in provider.node_states(inventory).items()}
    except DlvmError as error:
        states = {}
        problems.append(f"machine states unknown: {error}")
    nodes = tuple(
        NodeView(node.name, node.rank, f"{node.ip}:{node.port}", states.get(node.name, ""))
        for node in inventory.nodes
    )
    price = spend = guard = ""
    try:
        applied = cluster.applied
    except StateError:
        applied = None
    spec = applied.spec if applied is not None else None
    if spec is not None:
        price = provider.status_price(len(inventory.nodes)) or ""
        in_force = autostop.settings_in_force(state, spec)
        guard = autostop.describe(in_force) if in_force is not None else "off"
    if provider.owns_machines:
        spend = usage_line(cluster, inventory)
    try:
        jobs = tuple(job_view(record) for record in cluster.jobs.all()[-RECENT_JOBS:])
    except (OSError, TypeError, ValueError) as error:
        jobs = ()
        problems.append(f"job records unreadable: {error}")
    return ClusterView(
        name=state.name,
        kind=kind,
        nodes=nodes,
        price=price,
        spend=spend,
        autostop=guard,
        jobs=tuple(reversed(jobs)),  # the latest first
        problem="; ".join(problems),
    )


def job_view(record: JobRecord) -> JobView:
    events = []
    for event in record.events[-EVENTS_SHOWN:]:
        when = event.get("time")
        events.append(
            (float(when) if isinstance(when, int | float) else 0.0, str(event.get("text", "")))
        )
    logs = {}
    if record.local_logs:
        for name in record.nodes:
            logs[name] = log_tail(Path(record.local_logs) / f"{name}.log", lines=LOG_LINES)
    return JobView(
        id=record.id,
        framework=record.framework,
        command=record.command,
        state=record.state,
        started=record.started,
        ended=record.ended,
        restarts=record.restarts,
        recoveries=record.recoveries,
        nodes=tuple(record.nodes),
        events=tuple(events),
        logs=logs,
    )
