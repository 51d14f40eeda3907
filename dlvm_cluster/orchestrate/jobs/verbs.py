"""launch, logs, cancel and job states: (job, inventory) -> launch plan -> nodes.

Every job starts detached on its nodes (so `--detach` and a foreground run are the same job);
then it is supervised (orchestrate/jobs/supervise.py): by the foreground `dlvm launch`, or for
`--detach` by a supervisor process of its own. The supervisor's process and a request to
cancel are recorded here, beside the job's record, so that `cancel`, `status` and `down` find
them.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from pathlib import Path

from dlvm_cluster import secret_env
from dlvm_cluster.errors import DlvmError, UsageError
from dlvm_cluster.inventory import Inventory, Node
from dlvm_cluster.launch.plan import new_job_id, random_port
from dlvm_cluster.launch.planners import plan_launch
from dlvm_cluster.orchestrate.check.run import require_healthy
from dlvm_cluster.orchestrate.cluster.context import Cluster
from dlvm_cluster.orchestrate.cluster.records import held_secret_names, save_spec
from dlvm_cluster.orchestrate.jobs import queue as jobs_queue
from dlvm_cluster.orchestrate.jobs import supervise, supervisor_process
from dlvm_cluster.orchestrate.jobs.on_nodes import env_names, stop_job
from dlvm_cluster.orchestrate.jobs.store import (
    JobRecord,
    process_identity,
    supervisor_alive,
    wait_for_supervisor,
)
from dlvm_cluster.orchestrate.nodes.masking import Masking, read_masking
from dlvm_cluster.progress import Progress
from dlvm_cluster.remote import jobcontrol
from dlvm_cluster.remote.command import HELD_SECRETS_TIMEOUT
from dlvm_cluster.remote.connection import Connection
from dlvm_cluster.remote.fanout import each_its_own, run_on_nodes
from dlvm_cluster.remote.pool import for_each_node
from dlvm_cluster.remote.results import GroupResult, LineSink
from dlvm_cluster.spec.model import LoadedSpec


def launch(
    cluster: Cluster,
    progress: Progress,
    *,
    loaded: LoadedSpec | None = None,
    detach: bool = False,
    sync: bool = True,
    queue: bool = False,
) -> JobRecord:
    """Run the spec's job on the cluster; in the foreground unless `detach`. One job at a
    time: while one runs, refused, or with `queue` kept (state `queued`) until it ends."""
    state = cluster.state
    inventory = cluster.require_inventory()
    loaded = loaded or cluster.require_applied()
    job = loaded.spec.job
    if job is None:
        raise UsageError(
            f"the cluster file of {cluster.name!r} has no job", hint="add a `job:` section"
        )
    job_id = new_job_id()
    # Planned once here so that a job the cluster cannot run is refused now, queued or not.
    plan_launch(job, inventory, job_id=job_id, port=random_port(), spec_env=env_names(loaded))
    record = JobRecord(
        id=job_id,
        cluster=cluster.name,
        framework=job.framework,
        command=job.command,
        workdir=job.workdir,
        nodes=[],
        port=0,
        started=time.time(),
        local_logs=str(state.job_logs(job_id)),
        detached=detach,
    )
    refresh_states(cluster)  # a job whose supervisor is gone may have ended meanwhile
    with cluster.lock("launch"):
        if queue and jobs_queue.holding(cluster):
            return jobs_queue.enqueue(cluster, loaded, record)
        jobs_queue.refuse_if_busy(cluster)
        if job.check:  # before anything is pushed or started: a failing cluster gets no job
            require_healthy(cluster, progress)
        values = jobs_queue.start(cluster, loaded, record, progress, sync=sync)
        save_spec(state, cluster.jobs.spec_path(job_id), loaded)
        if detach:
            cluster.jobs.create(record)  # before its supervisor starts: it reads the record
            record.supervisor = supervisor_process.spawn(state, record)

            def supervised(stored: JobRecord) -> None:
                stored.supervisor = stored.supervisor or record.supervisor

            return cluster.jobs.update(record.id, supervised)
        record.supervisor = process_identity(os.getpid())
        cluster.jobs.create(record)
    supervisor = supervise.Supervisor(
        cluster, record, loaded, progress, secret_env.redactor(values)
    )
    try:
        ended = supervisor.run()
    except KeyboardInterrupt:
        if jobs_queue.queued(cluster):
            progress.note("interrupted: queued jobs were not started (launch one to start them)")
        raise
    except DlvmError:
        jobs_queue.start_next(cluster, progress, supervisor_process.spawn)
        raise
    jobs_queue.start_next(cluster, progress, supervisor_process.spawn)
    return ended


def job_to_cancel(cluster: Cluster, job_id: str | None) -> JobRecord:
    """The job named, or else the one running (never one that has ended, nor a queued one)."""
    if job_id is not None:
        return cluster.jobs.find(job_id)
    running = [record for record in refresh_states(cluster) if record.active]
    if len(running) == 1:
        return running[0]
    if not running:
        ended = cluster.jobs.all()
        raise UsageError(
            f"no job is running on cluster {cluster.name!r}",
            hint=(f"the last one, {ended[-1].id}, is {ended[-1].state}" if ended else "")
            + (
                "; name a queued job to take it off the queue" if jobs_queue.queued(cluster) else ""
            ),
        )
    raise UsageError(
        f"{len(running)} jobs are running on cluster {cluster.name!r}: "
        + ", ".join(record.id for record in running),
        hint="name the one to stop",
    )


def _off_the_queue(record: JobRecord) -> None:
    if record.state == "queued":
        record.state, record.ended = "cancelled", time.time()
        record.events.append({"time": record.ended, "text": "taken off the queue"})


def cancel(cluster: Cluster, job_id: str | None) -> tuple[JobRecord, dict[str, str]]:
    """Stop the job's supervisor (it finishes the step it is in: a replacement is not left
    half made) and the job's whole process tree on every node, and check none of it is left.
    A queued job is only taken off the queue (no node has anything of it)."""
    jobs = cluster.jobs
    record = job_to_cancel(cluster, job_id)
    if record.state == "queued":
        record = jobs.update(record.id, _off_the_queue)
        if record.state == "cancelled":
            return record, {}
    jobs.request_cancel(record.id)
    jobs.update(record.id, _mark_cancelled)
    wait_for_supervisor(record)
    cluster.forget_records()  # the supervisor may have replaced nodes meanwhile
    inventory = cluster.require_inventory()
    problems = stop_job(cluster.pool(), inventory.nodes, record.id)
    record = jobs.update(record.id, _mark_cancelled)
    return record, problems


def _mark_cancelled(record: JobRecord) -> None:
    if record.active:
        record.state, record.ended = "cancelled", record.ended or time.time()


def logs(
    cluster: Cluster, job_id: str | None, progress: Progress, *, follow: bool = False
) -> JobRecord:
    record = cluster.jobs.find(job_id)
    inventory = cluster.require_inventory()
    nodes = inventory.select(",".join(record.nodes))
    name = inventory.cluster
    command = jobcontrol.follow(name, record.id) if follow else jobcontrol.show_log(name, record.id)
    for event in record.events:
        progress.note(
            f"[dlvm] {time.strftime('%H:%M:%S', time.localtime(event['time']))} {event['text']}"
        )
    masking = node_masking(cluster, nodes)
    run_on_nodes(
        cluster.pool(),
        masking.runnable(nodes),
        lambda node: command,
        sink=progress.line,
        redact=masking.redact,
    )
    for node, why in masking.unreadable.items():
        progress.note(
            f"  {node}: log not shown: its secrets could not be read to mask them ({why})"
        )
    _show_removed_nodes(record, inventory, progress)
    return record


def _show_removed_nodes(record: JobRecord, inventory: Inventory, progress: Progress) -> None:
    """The logs `scale` kept of the job's nodes it removed (masked when kept), after the
    nodes that are still there: a removed node's output is part of the job's."""
    present = {node.name for node in inventory.nodes}
    for path in sorted(Path(record.local_logs).glob("*.log")):
        name = path.stem
        if name in present or not re.fullmatch(r"node-\d+", name):
            continue
        progress.note(f"{name} (removed by scale): its output as kept")
        gone = Node(name=name, rank=-1, ip="", port=0, user="", host_key="")
        with open(path, encoding="utf-8", errors="replace") as log:
            for line in log:
                progress.line(gone, "out", line.rstrip("\n"))


def node_masking(cluster: Cluster, nodes: Sequence[Node]) -> Masking:
    """What masks the output of `nodes`: the secrets installed on them, as the nodes hold
    them and as the applied spec resolves them here (orchestrate/nodes/masking.py says why both)."""
    pool = cluster.pool()

    def batch(on: Sequence[Node], commands: Sequence[str], sink: LineSink) -> GroupResult:
        return run_on_nodes(
            pool, on, each_its_own(on, commands), sink=sink, timeout=HELD_SECRETS_TIMEOUT
        )

    spec = cluster.require_applied().spec
    names = held_secret_names(cluster.state, spec)
    local = secret_env.resolve(spec, strict=False)
    masking = read_masking(cluster.require_inventory(), nodes, names, local, batch)
    assert masking is not None  # this batch always runs
    return masking


def exit_code(probed: str) -> int | None:
    """The exit status in a probe's `exit N` (what the node's `exit` file held: anything, so
    only a status a process can have is taken); None for anything else."""
    found = re.fullmatch(r"exit ([0-9]{1,3})", probed)
    return int(found.group(1)) if found and int(found.group(1)) <= 255 else None


def refresh_states(cluster: Cluster) -> list[JobRecord]:
    """Job records with `running` ones checked against the nodes; a job whose supervisor
    runs is as the supervisor says (between a failure and its recovery, no process runs)."""
    records = cluster.jobs.all()
    running = [r for r in records if r.active and not supervisor_alive(r)]
    if not running:
        return records
    inventory = cluster.require_inventory()
    seen: dict[str, dict[str, str]] = {}

    def one(connection: Connection) -> str:
        _, out, _ = connection.run(jobcontrol.probe(inventory.cluster, [r.id for r in running]))
        for line in out.splitlines():
            job_id, _, what = line.partition(" ")
            seen.setdefault(job_id, {})[connection.node.name] = what
        return ""

    for_each_node(cluster.pool(), inventory.nodes, one, lambda node, error: error)
    for record in running:
        states = [seen.get(record.id, {}).get(name, "unknown") for name in record.nodes]
        if any(s == "running" for s in states):
            continue
        exit_codes = {name: exit_code(s) for name, s in zip(record.nodes, states, strict=True)}
        ended = "succeeded" if all(s == "exit 0" for s in states) else "failed"

        def finish(
            stored: JobRecord, codes: dict[str, int | None] = exit_codes, ended: str = ended
        ) -> None:
            if stored.active and not supervisor_alive(stored):
                stored.exit_codes, stored.state = codes, ended
                stored.ended = stored.ended or time.time()

        updated = cluster.jobs.update(record.id, finish)
        records[records.index(record)] = updated
    return records
