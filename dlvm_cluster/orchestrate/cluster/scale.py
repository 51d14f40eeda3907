"""scale: grow or shrink a live cluster through the provider's node set, and keep elastic
training running through it.

Growing gives new nodes keys, intra-cluster SSH, files and setup (and Horovod, for a horovod
job) before scale reports done; running elastic jobs learn of them: every node gets the
job's new hostfile, torchrun's agents are started on the new nodes (they join at the next
rendezvous), and horovodrun on the head sees them in its host discovery and starts workers.
Shrinking first stops the jobs on the nodes to go (SIGTERM, a grace period, SIGKILL) and
keeps their logs in the job record; the head (node-0) is never removed. Scale updates the
applied spec: the cluster's truth lives in the state dir, and `up FILE` with another count
asks before converging back to the file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from dlvm_cluster import providers
from dlvm_cluster.errors import RemoteError, UsageError
from dlvm_cluster.inventory import Inventory, Node, node_name, node_rank
from dlvm_cluster.launch.plan import elastic_range
from dlvm_cluster.launch.planners import plan_launch
from dlvm_cluster.orchestrate.cluster.lifecycle import provision
from dlvm_cluster.orchestrate.cluster.prepare import prepare_nodes
from dlvm_cluster.orchestrate.cluster.records import applied_spec, open_pool, require_inventory
from dlvm_cluster.orchestrate.jobs.on_nodes import (
    env_names,
    start_on_nodes,
    stop_job,
    write_job_files,
)
from dlvm_cluster.orchestrate.jobs.store import JobRecord, save_job
from dlvm_cluster.orchestrate.jobs.verbs import node_masking, refresh_states
from dlvm_cluster.orchestrate.nodes.masking import Masking
from dlvm_cluster.progress import Progress
from dlvm_cluster.providers.base import NO_TRUST, KeyTrust
from dlvm_cluster.remote import jobcontrol
from dlvm_cluster.remote.connection import MAX_OUTPUT
from dlvm_cluster.remote.pool import SshPool
from dlvm_cluster.spec.model import LoadedSpec
from dlvm_cluster.state import ClusterState, private_dir

STOP_GRACE = 10.0


@dataclass(frozen=True)
class ScalePlan:
    cluster: str
    current: int
    target: int
    add: tuple[str, ...]
    remove: tuple[str, ...]


@dataclass(frozen=True)
class ScaleResult:
    plan: ScalePlan
    inventory: Inventory
    jobs_joined: tuple[str, ...]
    jobs_stopped: tuple[str, ...]
    seconds: float


def _scaled_spec(loaded: LoadedSpec, target: int) -> LoadedSpec:
    spec = loaded.spec
    if target < 1:
        raise UsageError(
            f"cannot scale to {target} nodes: the head (node-0) is never removed",
            hint="give 1 or more; `dlvm down` removes the whole cluster",
        )
    nodes = spec.nodes.model_copy(update={"count": target})
    scaled = spec.model_copy(update={"nodes": nodes})
    for _, message in providers.spec_kinds().problems(scaled):
        raise UsageError(f"cannot scale to {target}: {message}")
    return LoadedSpec(spec=scaled, path=loaded.path, text=loaded.text)


def preview(state: ClusterState, target: int) -> ScalePlan:
    inventory = require_inventory(state)
    applied = applied_spec(state)
    _scaled_spec(applied, target)
    # The applied spec, not the inventory, says which nodes are ready: a scale killed after
    # Terraform made a node but before it got keys, files and setup counts it as still to add.
    current = applied.spec.nodes.count
    names = [node_name(rank) for rank in range(max(current, target, len(inventory.nodes)))]
    return ScalePlan(
        cluster=state.name,
        current=current,
        target=target,
        add=tuple(names[current:target]),
        remove=tuple(names[target:current]),
    )


def _stop_jobs_on(
    state: ClusterState, inventory: Inventory, nodes: tuple[Node, ...], progress: Progress
) -> tuple[str, ...]:
    """Stop running jobs on nodes about to be removed; keep their logs in the job record."""
    running = [r for r in refresh_states(state) if r.state == "running"]
    stopped = []
    with open_pool(state, inventory) as pool:
        for record in running:
            on = tuple(node for node in nodes if node.name in record.nodes)
            if not on:
                continue
            progress.stage(f"stopping job {record.id} on {', '.join(n.name for n in on)}")
            stop_job(pool, on, record.id, grace=STOP_GRACE)
            masking = node_masking(pool, state, inventory, on)
            _keep_logs(pool, record, on, masking)
            for name, why in masking.unreadable.items():
                progress.note(f"the log of job {record.id} on {name} was not kept: {why}")
            record.nodes = [name for name in record.nodes if name not in {n.name for n in on}]
            save_job(state, record)
            stopped.append(record.id)
    return tuple(stopped)


def _keep_logs(pool: SshPool, record: JobRecord, nodes: tuple[Node, ...], masking: Masking) -> None:
    target = private_dir(Path(record.local_logs))
    for node in masking.runnable(nodes):
        try:
            # The log's last MAX_OUTPUT bytes: what a short command may send back.
            log = jobcontrol.show_log(pool.inventory.cluster, record.id)
            _, out, _ = pool.get(node).run(f"{{ {log}; }} | tail -c {MAX_OUTPUT}")
        except RemoteError:  # a log we cannot fetch must not stop the scale
            continue
        masked = "".join(masking.redact(line) for line in out.splitlines(keepends=True))
        (target / f"{node.name}.log").write_text(masked)


def _join_elastic_jobs(
    state: ClusterState,
    inventory: Inventory,
    loaded: LoadedSpec,
    new_nodes: tuple[Node, ...],
    progress: Progress,
) -> tuple[str, ...]:
    """Start the launcher of each running elastic job on the new nodes."""
    job = loaded.spec.job
    if job is None or elastic_range(job) is None or not new_nodes:
        return ()
    joined = []
    running = [r for r in refresh_states(state) if r.state == "running"]
    with open_pool(state, inventory) as pool:
        for record in running:
            if record.command != job.command or record.framework != job.framework:
                continue
            plan = plan_launch(
                job, inventory, job_id=record.id, port=record.port, spec_env=env_names(loaded)
            )
            progress.stage(f"job {record.id}: starting on {', '.join(n.name for n in new_nodes)}")
            # The nodes already in the job get its new hostfile (horovodrun's discovery reads
            # the head's); the new ones get it and their launches (torchrun: an agent each).
            arriving = {node.name for node in new_nodes}
            write_job_files(pool, plan, [n for n in inventory.nodes if n.name not in arriving])
            start_on_nodes(pool, inventory, loaded, plan, new_nodes)
            launched = {launch.node.name for launch in plan.launches} & arriving
            record.nodes = sorted({*record.nodes, *launched}, key=lambda n: node_rank(n) or 0)
            save_job(state, record)
            joined.append(record.id)
    return tuple(joined)


def scale(
    state: ClusterState, target: int, progress: Progress, *, trust: KeyTrust = NO_TRUST
) -> ScaleResult:
    """Grow or shrink to `target` nodes (see the module docstring). `trust`: the host keys
    of ssh-provider machines seen for the first time that are accepted (others:
    UnpinnedHostKeys)."""
    started = time.monotonic()
    with state.lock("scale"):
        loaded = _scaled_spec(applied_spec(state), target)
        before = require_inventory(state)
        plan = preview(state, target)
        leaving = tuple(node for node in before.nodes if node.name in plan.remove)
        stopped = _stop_jobs_on(state, before, leaving, progress) if leaving else ()
        inventory, _, _ = provision(loaded, state, progress, trust=trust)
        arriving = tuple(node for node in inventory.nodes if node.name in plan.add)
        with open_pool(state, inventory) as pool:
            prepare_nodes(pool, state, inventory, loaded, progress, nodes=arriving, scaled=True)
        joined = _join_elastic_jobs(state, inventory, loaded, arriving, progress)
        return ScaleResult(plan, inventory, joined, stopped, time.monotonic() - started)
