"""One job at a time per cluster: starting a job on its nodes (for `launch` and for the
queue), the jobs that hold the cluster, and the queue of `launch --queue`.

A queued job is a record in state `queued` with the spec it was launched with; the
supervisor of the job that holds the cluster (the foreground `dlvm launch` or a detached
supervisor process) starts the oldest queued job, detached, when its own job ends, whatever
the end. The cluster's lock makes the check "is a job running?" and the start one step, so
two launches at once cannot both start.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from dlvm_cluster import secret_env
from dlvm_cluster.errors import DlvmError, UsageError
from dlvm_cluster.launch.plan import random_port
from dlvm_cluster.launch.planners import plan_launch
from dlvm_cluster.orchestrate.cluster.context import Cluster
from dlvm_cluster.orchestrate.cluster.files import install_secrets, push_files
from dlvm_cluster.orchestrate.cluster.records import read_spec, save_spec
from dlvm_cluster.orchestrate.jobs.on_nodes import env_names, start_on_nodes
from dlvm_cluster.orchestrate.jobs.store import JobRecord
from dlvm_cluster.progress import Progress
from dlvm_cluster.remote import jobcontrol
from dlvm_cluster.spec.model import LoadedSpec
from dlvm_cluster.state import ClusterState

Spawn = Callable[[ClusterState, JobRecord], str]
"""Starts a job's detached supervisor; its process identity (supervisor_process.spawn)."""


def holding(cluster: Cluster) -> list[JobRecord]:
    """The jobs that hold the cluster: running or recovering, as their records say."""
    return [record for record in cluster.jobs.all() if record.active]


def queued(cluster: Cluster) -> list[JobRecord]:
    """The queue, oldest first."""
    return [record for record in cluster.jobs.all() if record.state == "queued"]


def describe(record: JobRecord) -> str:
    since = time.strftime("%H:%M:%S", time.localtime(record.started))
    return f"job {record.id} ({record.framework}: {record.command}, since {since})"


def refuse_if_busy(cluster: Cluster) -> None:
    """A second job while one runs would share the nodes' CPUs and GPUs with it."""
    busy = holding(cluster)
    if busy:
        raise UsageError(
            f"cluster {cluster.name!r} is running {describe(busy[-1])}; one job at a time",
            hint="wait for it to end, cancel it, or queue this job to start once the "
            "cluster is free",
        )


def enqueue(cluster: Cluster, loaded: LoadedSpec, record: JobRecord) -> JobRecord:
    """Keep the job, with its spec, until the cluster is free."""
    record.state = "queued"
    save_spec(cluster.state, cluster.jobs.spec_path(record.id), loaded)
    cluster.jobs.create(record)
    return record


def start(
    cluster: Cluster,
    loaded: LoadedSpec,
    record: JobRecord,
    progress: Progress,
    *,
    sync: bool = True,
) -> dict[str, str]:
    """Plan the job on the cluster as it is now and start it on every node: secrets, files
    (unless not `sync`), the job's files and launches. Fills in the record's nodes, port and
    start time; returns the secret values (for masking the job's output)."""
    job = loaded.spec.job
    assert job is not None
    inventory = cluster.require_inventory()
    record.port = random_port()
    plan = plan_launch(
        job, inventory, job_id=record.id, port=record.port, spec_env=env_names(loaded)
    )
    record.nodes = [launch.node.name for launch in plan.launches]
    record.spans, record.processes = list(plan.nodes), plan.processes
    record.remote_log = f"{jobcontrol.job_dir(inventory.cluster, record.id)}/log"
    pool = cluster.pool()
    values = secret_env.resolve(loaded.spec)
    install_secrets(pool, cluster.state, inventory.nodes, values)
    if sync and loaded.spec.files:
        push_files(pool, loaded, inventory.nodes, progress)
    progress.stage(f"starting job {record.id} ({job.framework})")
    start_on_nodes(pool, inventory, loaded, plan, inventory.nodes)
    record.state, record.started = "running", time.time()
    return values


def start_next(cluster: Cluster, progress: Progress, spawn: Spawn) -> JobRecord | None:
    """Start the oldest queued job, detached, if the cluster is free; None when there is none
    to start. A job that cannot start is marked failed and the next one tried."""
    while True:
        try:
            with cluster.lock("start a queued job"):
                if holding(cluster) or not queued(cluster):
                    return None
                record = queued(cluster)[0]
                loaded = read_spec(cluster.state, cluster.jobs.spec_path(record.id))
                try:
                    if loaded is None:
                        raise UsageError(f"job {record.id} has no recorded spec")
                    progress.note(f"the cluster is free: starting queued job {record.id}")
                    start(cluster, loaded, record, progress)
                except DlvmError as exc:
                    message = exc.message

                    def failed(stored: JobRecord, message: str = message) -> None:
                        stored.state, stored.ended = "failed", time.time()
                        stored.events.append(
                            {"time": time.time(), "text": f"could not start: {message}"}
                        )

                    cluster.jobs.update(record.id, failed)
                    progress.note(f"queued job {record.id} could not start: {message}")
                    continue
                record.detached = True

                def running(stored: JobRecord, started: JobRecord = record) -> None:
                    for name in ("state", "started", "nodes", "spans", "processes", "port"):
                        setattr(stored, name, getattr(started, name))
                    stored.remote_log, stored.detached = started.remote_log, True

                cluster.jobs.update(record.id, running)
                record.supervisor = spawn(cluster.state, record)

                def supervised(stored: JobRecord, identity: str = record.supervisor) -> None:
                    stored.supervisor = stored.supervisor or identity

                return cluster.jobs.update(record.id, supervised)
        except DlvmError as exc:  # the cluster is locked (up, down, scale): it starts later
            progress.note(f"queued jobs wait: {exc.message}")
            return None
