"""Stopping and starting a cluster's machines (`dlvm stop`, and the first stage of `dlvm
start` and of `up` on a stopped cluster), and why each stopped node stopped.

A stopped node keeps its disk: home, data, caches, the environment setup built, and its host
key; starting it never recreates it. Why a node stopped comes from its provider where the
provider keeps it (a local node's own record, written by the node when its autostop watcher
powered it off), else from what `dlvm stop` recorded in the state dir.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from dlvm_cluster.errors import DlvmError
from dlvm_cluster.inventory import Inventory
from dlvm_cluster.orchestrate.cluster.context import Cluster
from dlvm_cluster.progress import Progress
from dlvm_cluster.providers.base import NodeState, StopMark
from dlvm_cluster.providers.kind import Feature
from dlvm_cluster.remote import agent_process

USER = "user"
_DOWN = (NodeState.STOPPED, NodeState.MISSING, NodeState.PREEMPTED)


def _only(inventory: Inventory, names: list[str]) -> Inventory:
    return replace(inventory, nodes=tuple(n for n in inventory.nodes if n.name in names))


@dataclass(frozen=True)
class StopResult:
    cluster: str
    stopped: tuple[str, ...]
    seconds: float


def stop(cluster: Cluster, progress: Progress) -> StopResult:
    """Power every node off, keeping its disk; a stopped node is left as it is."""
    started = time.monotonic()
    state = cluster.state
    with cluster.lock("stop"):
        inventory = cluster.require_inventory()
        cluster.require(Feature.STOP_START, verb="stop")
        provider = cluster.provider
        agent_process.stop(state.root)  # its connections would only break
        states = provider.node_states(inventory)
        running = _only(
            inventory,
            [node.name for node in inventory.nodes if states.get(node.name) not in _DOWN],
        )
        if running.nodes:
            provider.stop_nodes(running, progress, by=USER)
        state.write_json(state.stopped_path, {"by": USER, "at": time.time()})
        record_usage(cluster, inventory)
    return StopResult(state.name, tuple(n.name for n in running.nodes), time.monotonic() - started)


def start_stopped(cluster: Cluster, inventory: Inventory, progress: Progress) -> list[str]:
    """Start the nodes the provider sees stopped, on their disks; their names. The caller
    holds the cluster's lock and waits for SSH."""
    state, provider = cluster.state, cluster.provider
    states = provider.node_states(inventory)
    stopped = [node.name for node in inventory.nodes if states.get(node.name) == NodeState.STOPPED]
    if stopped:
        cluster.require(Feature.STOP_START, verb="start")
        provider.start_nodes(_only(inventory, stopped), progress)
    state.stopped_path.unlink(missing_ok=True)
    return stopped


def stop_marks(cluster: Cluster, inventory: Inventory) -> dict[str, StopMark]:
    """Why and when each node stopped, as far as anyone recorded it."""
    state = cluster.state
    try:
        marks = cluster.provider.stop_marks(inventory)
    except DlvmError:
        marks = {}
    recorded = state.read_json(state.stopped_path)
    if isinstance(recorded, dict) and "at" in recorded:
        mark = StopMark(by=str(recorded.get("by", USER)), at=float(recorded["at"]))
        for node in inventory.nodes:
            marks.setdefault(node.name, mark)
    return marks


def taken_down_mark(cluster: Cluster, inventory: Inventory) -> StopMark | None:
    """The mark of a cluster whose nodes all went for autostop's `down`: powered off (a local
    node cannot delete itself) or deleted (gcp: the network and the state dir are left to
    the next dlvm command on this machine); None otherwise."""
    provider = cluster.provider
    try:
        states = provider.node_states(inventory)
    except DlvmError:  # the provider cannot be asked: nothing to reconcile now
        return None
    gone = (NodeState.STOPPED, NodeState.MISSING)  # local: powered off; gcp: deleted
    if not inventory.nodes or any(states.get(node.name) not in gone for node in inventory.nodes):
        return None
    try:
        marks = provider.stop_marks(inventory)
    except DlvmError:
        return None
    found = [marks.get(node.name) for node in inventory.nodes]
    if all(mark is not None and mark.action == "down" for mark in found):
        return found[0]
    return None


def _hours(seconds: float) -> float:
    return max(0.0, seconds) / 3600.0


def record_usage(cluster: Cluster, inventory: Inventory) -> dict[str, Any]:
    """Bring the state dir's node-hours up to date with the machines as the provider sees them
    now: a node found stopped since the last look stopped when its mark says (autostop while
    no dlvm ran), else now. Returns the record:
    {"since": {node: [state, epoch]}, "running_hours": h, "stopped_hours": h}."""
    now = time.time()
    state, provider = cluster.state, cluster.provider
    record = state.read_json(state.usage_path) or {}
    try:
        states = provider.node_states(inventory)
    except DlvmError:  # the provider cannot be asked now: the record stays as it was
        return dict(record)
    since: dict[str, list[Any]] = dict(record.get("since", {}))
    totals = {
        "running": float(record.get("running_hours", 0.0)),
        "stopped": float(record.get("stopped_hours", 0.0)),
    }
    marks: dict[str, StopMark] | None = None
    for node in inventory.nodes:
        seen = states.get(node.name)
        if seen is None or seen == NodeState.RUNNING:
            current: str | None = "running"  # unknown to the provider: SSH says it is there
        elif seen == NodeState.STOPPED:
            current = "stopped"
        else:
            current = None  # preempted or missing: nothing billed
        previous = since.get(node.name)
        if previous is not None and previous[0] == current:
            continue
        changed_at = now
        if previous is not None and previous[0] == "running" and current == "stopped":
            if marks is None:
                marks = stop_marks(cluster, inventory)
            mark = marks.get(node.name)
            if mark is not None and previous[1] <= mark.at <= now:
                changed_at = mark.at
        if previous is not None:
            totals[previous[0]] += _hours(changed_at - float(previous[1]))
        if current is None:
            since.pop(node.name, None)
        else:
            since[node.name] = [current, changed_at]
    for name in [name for name in since if name not in {n.name for n in inventory.nodes}]:
        kind, start = since.pop(name)
        totals[kind] += _hours(now - float(start))
    updated = {
        "since": since,
        "running_hours": totals["running"],
        "stopped_hours": totals["stopped"],
    }
    state.write_json(state.usage_path, updated)
    return updated


def node_hours(record: dict[str, Any], now: float | None = None) -> tuple[float, float]:
    """(running, stopped) node-hours so far, the open intervals counted up to now."""
    now = time.time() if now is None else now
    totals = {"running": float(record.get("running_hours", 0.0)), "stopped": 0.0}
    totals["stopped"] = float(record.get("stopped_hours", 0.0))
    for kind, start in record.get("since", {}).values():
        totals[kind] += _hours(now - float(start))
    return totals["running"], totals["stopped"]
