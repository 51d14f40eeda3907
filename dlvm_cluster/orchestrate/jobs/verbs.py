"""launch, logs, cancel and job states: (job, inventory) -> launch plan -> nodes.

Every job starts detached on its nodes (so `--detach` and a foreground run are the same job);
then it is supervised (orchestrate/jobs/supervise.py): by the foreground `dlvm launch`, or for
`--detach` by a supervisor process of its own. The supervisor's process and a request to
cancel are recorded here, beside the job's record, so that `cancel`, `status` and `down` find
them.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import signal
import tarfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dlvm_cluster import secret_env
from dlvm_cluster.errors import RemoteError, UsageError
from dlvm_cluster.inventory import Inventory, Node
from dlvm_cluster.launch.environment import node_environment
from dlvm_cluster.launch.plan import HostFile, LaunchPlan
from dlvm_cluster.launch.planners import plan_launch
from dlvm_cluster.orchestrate.cluster.files import install_secrets, push_files
from dlvm_cluster.orchestrate.cluster.records import (
    applied_spec,
    held_secret_names,
    open_pool,
    require_inventory,
    save_spec,
)
from dlvm_cluster.orchestrate.nodes.masking import LineSink, Masking, read_masking
from dlvm_cluster.progress import Progress
from dlvm_cluster.remote import jobcontrol
from dlvm_cluster.remote.command import HELD_SECRETS_TIMEOUT
from dlvm_cluster.remote.connection import Connection
from dlvm_cluster.remote.fanout import each_its_own, run_on_nodes
from dlvm_cluster.remote.pool import SshPool, for_each_node, run_everywhere
from dlvm_cluster.remote.results import GroupResult
from dlvm_cluster.spec.model import LoadedSpec
from dlvm_cluster.state import ClusterState, private_dir

PORT_RANGE = (20000, 30000)
WRITE_JOB_FILES = "mkdir -p ~ && tar -x -C ~ -f -"  # a LaunchPlan's files, a tar on stdin
SUPERVISOR_EXIT_WAIT = 120.0  # seconds `cancel` lets a supervisor finish the step it is in


@dataclass
class JobRecord:
    """What the state dir keeps of a job (jobs/<id>.json)."""

    id: str
    cluster: str
    framework: str
    command: str
    workdir: str
    nodes: list[str]
    port: int
    started: float
    state: str = "running"  # running | succeeded | failed | cancelled | recovering
    ended: float | None = None
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    remote_log: str = ""
    local_logs: str = ""
    detached: bool = False
    restarts: int = 0  # relaunches, whatever the cause (a rank's error or a lost node)
    recoveries: int = 0  # of which after replacing lost nodes
    events: list[dict[str, Any]] = field(default_factory=list)  # {"time", "text"}
    supervisor: str = ""  # the supervising process, as process_identity() names it

    @property
    def active(self) -> bool:
        return self.state in ("running", "recovering")


def _jobs_dir(state: ClusterState) -> Path:
    return state.root / "jobs"


def job_spec_path(state: ClusterState, job_id: str) -> Path:
    """The spec a job was launched with (a detached supervisor relaunches from it)."""
    return private_dir(_jobs_dir(state)) / f"{job_id}.spec"


def _cancel_flag(state: ClusterState, job_id: str) -> Path:
    return _jobs_dir(state) / f"{job_id}.cancel"


def request_cancel(state: ClusterState, job_id: str) -> None:
    """Tell the job's supervisor, wherever it is in its loop, to stop and not relaunch."""
    private_dir(_jobs_dir(state))
    _cancel_flag(state, job_id).touch(mode=0o600)


def cancel_requested(state: ClusterState, job_id: str) -> bool:
    return _cancel_flag(state, job_id).exists()


def process_identity(pid: int) -> str:
    """`PID:START` (start time in clock ticks since boot): a pid reused by another process
    later does not match. '' when no such process runs."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return ""
    return "" if fields[0] == "Z" else f"{pid}:{fields[19]}"


def supervisor_alive(record: JobRecord) -> bool:
    pid = record.supervisor.partition(":")[0]
    return pid.isdigit() and process_identity(int(pid)) == record.supervisor


def save_job(state: ClusterState, record: JobRecord) -> None:
    directory = private_dir(_jobs_dir(state))
    state.write_json(directory / f"{record.id}.json", asdict(record))


def list_jobs(state: ClusterState) -> list[JobRecord]:
    directory = _jobs_dir(state)
    if not directory.exists():
        return []
    records = [JobRecord(**state.read_json(path)) for path in sorted(directory.glob("*.json"))]
    return sorted(records, key=lambda record: record.started)


def find_job(state: ClusterState, job_id: str | None) -> JobRecord:
    records = list_jobs(state)
    if not records:
        raise UsageError(f"cluster {state.name!r} has no jobs", hint="start one with `dlvm launch`")
    if job_id is None:
        return records[-1]
    for record in records:
        if record.id == job_id:
            return record
    raise UsageError(
        f"no job {job_id!r} on cluster {state.name!r}",
        hint="jobs: " + ", ".join(r.id for r in records[-5:]),
    )


def env_names(loaded: LoadedSpec) -> dict[str, str]:
    """The spec's env for launch planning: MPI forwards these names (secrets' values are on the
    nodes already, in their secrets file), so secret values are left out."""
    return {**loaded.spec.plain_env(), **dict.fromkeys(loaded.spec.secret_env(), "")}


def random_port() -> int:
    """A port for a job's rendezvous, drawn from PORT_RANGE: jobs started at once rarely meet."""
    return PORT_RANGE[0] + int.from_bytes(os.urandom(2), "big") % (PORT_RANGE[1] - PORT_RANGE[0])


def new_job_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def _hostfiles_payload(files: Sequence[HostFile]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for item in files:
            data = item.content.encode()
            info = tarfile.TarInfo(item.path.removeprefix("~/"))
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def start_on_nodes(
    pool: SshPool,
    inventory: Inventory,
    loaded: LoadedSpec,
    plan: LaunchPlan,
    nodes: Sequence[Node],
) -> None:
    """Write the plan's files on `nodes`, then start their launches detached."""
    assert loaded.spec.job is not None
    workdir = loaded.spec.job.workdir
    payload = _hostfiles_payload(plan.files)
    launches = {launch.node.name: launch for launch in plan.launches}

    def one(connection: Connection) -> str:
        code, _, err = connection.run(WRITE_JOB_FILES, stdin=payload)
        if code != 0:
            return f"{connection.node.name}: cannot write job files: {err.strip()}"
        launch = launches.get(connection.node.name)
        if launch is None:
            return ""
        env = {**node_environment(inventory, launch.node, loaded.spec.plain_env()), **launch.env}
        code, _, err = connection.run(
            jobcontrol.start(inventory.cluster, plan.job_id, launch.command, env, workdir)
        )
        return "" if code == 0 else f"{connection.node.name}: cannot start: {err.strip()}"

    errors = [e for e in for_each_node(pool, nodes, one, lambda n, e: e) if e]
    if errors:
        stop_job(pool, nodes, plan.job_id)
        raise RemoteError("the job did not start: " + "; ".join(errors))


def write_job_files(pool: SshPool, plan: LaunchPlan, nodes: Sequence[Node]) -> None:
    """(Re)write the plan's files on `nodes`, starting nothing: how the nodes of a running
    elastic job learn its new hostfile after a scale."""
    run_everywhere(
        pool, nodes, WRITE_JOB_FILES, _hostfiles_payload(plan.files), "cannot write job files"
    )


def stop_job(
    pool: SshPool, nodes: Sequence[Node], job_id: str, *, grace: float = 5.0
) -> dict[str, str]:
    """Stop the job's processes on `nodes` (SIGTERM, then SIGKILL after `grace` seconds);
    returns per node an error, or '' when none of the job's processes is left."""

    def one(connection: Connection) -> str:
        code, out, err = connection.run(jobcontrol.stop(pool.inventory.cluster, job_id, grace))
        left = out.strip().rsplit(" ", 1)[-1] if out.strip().startswith("left") else "?"
        if code != 0 or left != "0":
            return f"{left} process(es) of job {job_id} still alive {err.strip()}".strip()
        return ""

    results = for_each_node(pool, nodes, one, lambda node, error: error)
    return {node.name: result for node, result in zip(nodes, results, strict=True)}


def launch(
    state: ClusterState,
    progress: Progress,
    *,
    loaded: LoadedSpec | None = None,
    detach: bool = False,
    sync: bool = True,
) -> JobRecord:
    """Run the spec's job on the cluster; in the foreground unless `detach`."""
    inventory = require_inventory(state)
    loaded = loaded or applied_spec(state)
    job = loaded.spec.job
    if job is None:
        raise UsageError(
            f"the cluster file of {state.name!r} has no job", hint="add a `job:` section"
        )
    job_id = new_job_id()
    port = random_port()
    plan = plan_launch(job, inventory, job_id=job_id, port=port, spec_env=env_names(loaded))
    record = JobRecord(
        id=job_id,
        cluster=state.name,
        framework=job.framework,
        command=job.command,
        workdir=job.workdir,
        nodes=[launch.node.name for launch in plan.launches],
        port=port,
        started=time.time(),
        remote_log=f"{jobcontrol.job_dir(inventory.cluster, job_id)}/log",
        local_logs=str(state.logs_dir / "jobs" / job_id),
        detached=detach,
    )
    if job.check:  # before anything is pushed or started: a failing cluster gets no job
        from dlvm_cluster.orchestrate.check.run import require_healthy

        require_healthy(state, progress)
    from dlvm_cluster.orchestrate.jobs import (
        supervise,
        supervisor_process,  # build on this module
    )

    with open_pool(state, inventory) as pool:
        values = secret_env.resolve(loaded.spec)
        install_secrets(pool, state, inventory.nodes, values)
        if sync and loaded.spec.files:
            push_files(pool, loaded, inventory.nodes, progress)
        progress.stage(f"starting job {job_id} ({job.framework})")
        start_on_nodes(pool, inventory, loaded, plan, inventory.nodes)
    save_spec(state, job_spec_path(state, job_id), loaded)
    if detach:
        record.supervisor = supervisor_process.spawn(state, record)
        save_job(state, record)
        return record
    record.supervisor = process_identity(os.getpid())
    save_job(state, record)
    return supervise.Supervisor(state, record, loaded, progress, secret_env.redactor(values)).run()


def cancel(state: ClusterState, job_id: str | None) -> tuple[JobRecord, dict[str, str]]:
    """Stop the job's supervisor (it finishes the step it is in: a replacement is not left
    half made) and the job's whole process tree on every node, and check none of it is left."""
    record = find_job(state, job_id)
    request_cancel(state, record.id)
    if record.active:
        record.state, record.ended = "cancelled", time.time()
        save_job(state, record)
    wait_for_supervisor(record)
    inventory = require_inventory(state)  # read after the supervisor: it may have replaced nodes
    with open_pool(state, inventory) as pool:
        problems = stop_job(pool, inventory.nodes, record.id)
    record = find_job(state, record.id)
    if record.active:
        record.state, record.ended = "cancelled", record.ended or time.time()
        save_job(state, record)
    return record, problems


def wait_for_supervisor(record: JobRecord, wait: float = SUPERVISOR_EXIT_WAIT) -> None:
    """Wait for the job's supervisor (told to stop by request_cancel) to exit; SIGTERM it
    after `wait` seconds (it then stops the job as on Ctrl-C), SIGKILL after as long again.
    Never this process itself."""
    if record.supervisor.partition(":")[0] == str(os.getpid()):
        return
    escalation = [signal.SIGTERM, signal.SIGKILL]
    deadline = time.monotonic() + wait
    while supervisor_alive(record):
        if time.monotonic() >= deadline:
            if not escalation:
                return
            with contextlib.suppress(OSError):
                os.kill(int(record.supervisor.partition(":")[0]), escalation.pop(0))
            deadline = time.monotonic() + wait
        time.sleep(0.2)


def stop_supervisors(state: ClusterState) -> None:
    """For `down`: every job's supervisor stops before the nodes go."""
    for record in list_jobs(state):
        if supervisor_alive(record):
            request_cancel(state, record.id)
            wait_for_supervisor(record)


def logs(
    state: ClusterState, job_id: str | None, progress: Progress, *, follow: bool = False
) -> JobRecord:
    record = find_job(state, job_id)
    inventory = require_inventory(state)
    nodes = inventory.select(",".join(record.nodes))
    cluster = inventory.cluster
    command = (
        jobcontrol.follow(cluster, record.id) if follow else jobcontrol.show_log(cluster, record.id)
    )
    for event in record.events:
        progress.note(
            f"[dlvm] {time.strftime('%H:%M:%S', time.localtime(event['time']))} {event['text']}"
        )
    with open_pool(state, inventory) as pool:
        masking = node_masking(pool, state, inventory, nodes)
        run_on_nodes(
            pool,
            masking.runnable(nodes),
            lambda node: command,
            sink=progress.line,
            redact=masking.redact,
        )
    for node, why in masking.unreadable.items():
        progress.note(
            f"  {node}: log not shown: its secrets could not be read to mask them ({why})"
        )
    return record


def node_masking(
    pool: SshPool, state: ClusterState, inventory: Inventory, nodes: Sequence[Node]
) -> Masking:
    """What masks the output of `nodes`: the secrets installed on them, as the nodes hold
    them and as the applied spec resolves them here (orchestrate/nodes/masking.py says why both)."""

    def batch(on: Sequence[Node], commands: Sequence[str], sink: LineSink) -> GroupResult:
        return run_on_nodes(
            pool, on, each_its_own(on, commands), sink=sink, timeout=HELD_SECRETS_TIMEOUT
        )

    spec = applied_spec(state).spec
    names = held_secret_names(state, spec)
    local = secret_env.resolve(spec, strict=False)
    masking = read_masking(inventory, nodes, names, local, batch)
    assert masking is not None  # this batch always runs
    return masking


def refresh_states(state: ClusterState) -> list[JobRecord]:
    """Job records with `running` ones checked against the nodes; a job whose supervisor
    runs is as the supervisor says (between a failure and its recovery, no process runs)."""
    records = list_jobs(state)
    running = [r for r in records if r.active and not supervisor_alive(r)]
    if not running:
        return records
    inventory = require_inventory(state)
    seen: dict[str, dict[str, str]] = {}

    def one(connection: Connection) -> str:
        _, out, _ = connection.run(jobcontrol.probe(inventory.cluster, [r.id for r in running]))
        for line in out.splitlines():
            job_id, _, what = line.partition(" ")
            seen.setdefault(job_id, {})[connection.node.name] = what
        return ""

    with open_pool(state, inventory) as pool:
        for_each_node(pool, inventory.nodes, one, lambda node, error: error)
    for record in running:
        states = [seen.get(record.id, {}).get(name, "unknown") for name in record.nodes]
        if any(s == "running" for s in states):
            continue
        codes = {name: s for name, s in zip(record.nodes, states, strict=True)}
        record.exit_codes = {
            name: int(s.split()[1]) if s.startswith("exit") else None for name, s in codes.items()
        }
        record.state = "succeeded" if all(s == "exit 0" for s in states) else "failed"
        record.ended = record.ended or time.time()
        save_job(state, record)
    return records
