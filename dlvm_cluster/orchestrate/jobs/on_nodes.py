"""A job on its nodes: its files written, its launches started detached, its processes
stopped (remote/jobcontrol.py is the shell text each runs)."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Sequence

from dlvm_cluster.errors import RemoteError
from dlvm_cluster.inventory import Inventory, Node, node_rank
from dlvm_cluster.launch.environment import node_environment
from dlvm_cluster.launch.plan import HostFile, LaunchPlan
from dlvm_cluster.launch.planners import plan_launch
from dlvm_cluster.orchestrate.cluster.context import Cluster
from dlvm_cluster.orchestrate.jobs.store import JobRecord
from dlvm_cluster.remote import jobcontrol
from dlvm_cluster.remote.connection import Connection
from dlvm_cluster.remote.pool import SshPool, for_each_node, run_everywhere
from dlvm_cluster.spec.model import LoadedSpec

WRITE_JOB_FILES = "mkdir -p ~ && tar -x -C ~ -f -"  # a LaunchPlan's files, a tar on stdin


def env_names(loaded: LoadedSpec) -> dict[str, str]:
    """The spec's env for launch planning: MPI forwards these names (secrets' values are on the
    nodes already, in their secrets file), so secret values are left out."""
    return {**loaded.spec.plain_env(), **dict.fromkeys(loaded.spec.secret_env(), "")}


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


def join_running_job(
    cluster: Cluster, loaded: LoadedSpec, record: JobRecord, names: Sequence[str]
) -> list[str]:
    """Start a running elastic job's launcher on the named nodes, which `scale` added or a
    recovery made anew: the job's other nodes get its new hostfile first (horovodrun's
    discovery on the head reads it; a replaced node may have a new address), then the
    arriving nodes get it and their launches, and join the job's next rendezvous. The job's
    record gains them (its `nodes` only, under the record's lock); the names that joined."""
    job = loaded.spec.job
    assert job is not None
    inventory = cluster.require_inventory()
    plan = plan_launch(
        job, inventory, job_id=record.id, port=record.port, spec_env=env_names(loaded)
    )
    arriving = set(names)
    pool = cluster.pool()
    write_job_files(pool, plan, [node for node in inventory.nodes if node.name not in arriving])
    start_on_nodes(
        pool, inventory, loaded, plan, [node for node in inventory.nodes if node.name in arriving]
    )
    launched = {launch.node.name for launch in plan.launches} & arriving

    def add(stored: JobRecord) -> None:
        stored.nodes = sorted({*stored.nodes, *launched}, key=lambda n: node_rank(n) or 0)

    cluster.jobs.update(record.id, add)
    return sorted(launched, key=lambda n: node_rank(n) or 0)
