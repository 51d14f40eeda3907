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
from dlvm_cluster.inventory import Inventory, Node, node_name
from dlvm_cluster.launch.plan import elastic_range
from dlvm_cluster.orchestrate.cluster.context import Cluster
from dlvm_cluster.orchestrate.cluster.lifecycle import provision
from dlvm_cluster.orchestrate.cluster.prepare import prepare_nodes
from dlvm_cluster.orchestrate.jobs.on_nodes import (
    join_running_job,
    stop_job,
)
from dlvm_cluster.orchestrate.jobs.store import JobRecord
from dlvm_cluster.orchestrate.jobs.verbs import node_masking, refresh_states
from dlvm_cluster.orchestrate.nodes.masking import Masking
from dlvm_cluster.progress import Progress
from dlvm_cluster.providers.base import NO_TRUST, KeyTrust
from dlvm_cluster.remote import jobcontrol
from dlvm_cluster.remote.connection import MAX_OUTPUT
from dlvm_cluster.remote.pool import SshPool
from dlvm_cluster.spec.model import LoadedSpec
from dlvm_cluster.state import private_dir

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


def preview(cluster: Cluster, target: int) -> ScalePlan:
    inventory = cluster.require_inventory()
    applied = cluster.require_applied()
    _scaled_spec(applied, target)
    # The applied spec, not the inventory, says which nodes are ready: a scale killed after
    # Terraform made a node but before it got keys, files and setup counts it as still to add.
    current = applied.spec.nodes.count
    names = [node_name(rank) for rank in range(max(current, target, len(inventory.nodes)))]
    return ScalePlan(
        cluster=cluster.name,
        current=current,
        target=target,
        add=tuple(names[current:target]),
        remove=tuple(names[target:current]),
    )


def _stop_jobs_on(cluster: Cluster, nodes: tuple[Node, ...], progress: Progress) -> tuple[str, ...]:
    """Stop running jobs on nodes about to be removed; keep their logs in the job record."""
    running = [r for r in refresh_states(cluster) if r.state == "running"]
    stopped = []
    pool = cluster.pool()
    for record in running:
        on = tuple(node for node in nodes if node.name in record.nodes)
        if not on:
            continue
        progress.stage(f"stopping job {record.id} on {', '.join(n.name for n in on)}")
        stop_job(pool, on, record.id, grace=STOP_GRACE)
        masking = node_masking(cluster, on)
        _keep_logs(pool, record, on, masking)
        for name, why in masking.unreadable.items():
            progress.note(f"the log of job {record.id} on {name} was not kept: {why}")
        leaving = {n.name for n in on}

        def drop(stored: JobRecord, leaving: set[str] = leaving) -> None:
            stored.nodes = [name for name in stored.nodes if name not in leaving]

        cluster.jobs.update(record.id, drop)  # only `nodes`: the supervisor owns the rest
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
    cluster: Cluster,
    loaded: LoadedSpec,
    new_nodes: tuple[Node, ...],
    progress: Progress,
) -> tuple[str, ...]:
    """Start the launcher of each running elastic job of this spec's job on the new nodes."""
    job = loaded.spec.job
    if job is None or elastic_range(job) is None or not new_nodes:
        return ()
    joined = []
    running = [r for r in refresh_states(cluster) if r.state == "running"]
    for record in running:
        if record.command != job.command or record.framework != job.framework:
            continue
        progress.stage(f"job {record.id}: starting on {', '.join(n.name for n in new_nodes)}")
        join_running_job(cluster, loaded, record, [n.name for n in new_nodes])
        joined.append(record.id)
    return tuple(joined)


def scale(
    cluster: Cluster, target: int, progress: Progress, *, trust: KeyTrust = NO_TRUST
) -> ScaleResult:
    """Grow or shrink to `target` nodes (see the module docstring). `trust`: the host keys
    of ssh-provider machines seen for the first time that are accepted (others:
    UnpinnedHostKeys)."""
    started = time.monotonic()
    with cluster.lock("scale"):
        loaded = _scaled_spec(cluster.require_applied(), target)
        before = cluster.require_inventory()
        plan = preview(cluster, target)
        leaving = tuple(node for node in before.nodes if node.name in plan.remove)
        stopped = _stop_jobs_on(cluster, leaving, progress) if leaving else ()
        inventory, _, _ = provision(cluster, loaded, progress, trust=trust)
        arriving = tuple(node for node in inventory.nodes if node.name in plan.add)
        prepare_nodes(cluster, loaded, progress, nodes=arriving, scaled=True)
        joined = _join_elastic_jobs(cluster, loaded, arriving, progress)
        return ScaleResult(plan, inventory, joined, stopped, time.monotonic() - started)
