"""From (job, inventory) to per-node commands and environments; never opens a connection.

`plan_launch` makes the job's layout once (its nodes, processes, port, id and the names of
its environment) and hands it to the planner of the job's framework (launch/frameworks.py),
which returns a LaunchPlan. Nothing here opens a connection or starts a process: the caller
writes the plan's `files` on every node, then runs each NodeLaunch's `command` on its node, in the
job's workdir, with node_environment() plus the launch's `env`.

Besides the DLVM_* contract variables, every job process gets:

    MASTER_ADDR, MASTER_PORT   the head's IP and the job's port
    DLVM_JOB_ID                the job's id
    DLVM_PROCS_PER_NODE        processes per node (`procs_per_node`; auto = GPUs, or 1)
    DLVM_WORLD_SIZE            processes in all: procs per node x nodes in the job
    DLVM_HOSTFILE              ~/.dlvm/node-files/<cluster>/jobs/<job_id>/hostfile: one line
                               `IP slots=N` per node
                               (the MPI and DeepSpeed format), for launchers of your own
    PYTHONUNBUFFERED=1         so output reaches the job's logs line by line

DLVM_HOSTFILE's value needs the node's $HOME, which only the node's shell knows, so every
command starts `export DLVM_HOSTFILE="$HOME"/... && ` and then runs the launcher.

Commands are built from argv lists and quoted once; the user's job.command is the only text
inserted as shell syntax, so `$VAR`, quotes and redirections in it work as written.
"""

from __future__ import annotations

from collections.abc import Mapping

from dlvm_cluster.errors import UsageError
from dlvm_cluster.inventory import Inventory
from dlvm_cluster.launch.frameworks import FRAMEWORKS, elastic_names
from dlvm_cluster.launch.plan import NO_ENV, LaunchPlan, elastic_range, job_layout
from dlvm_cluster.spec.model import Job


def plan_launch(
    job: Job,
    inventory: Inventory,
    *,
    job_id: str,
    port: int,
    spec_env: Mapping[str, object] = NO_ENV,
) -> LaunchPlan:
    """The plan for `job` on `inventory`. `spec_env` is the cluster file's env, of which only
    the names are used: MPI forwards them to the processes it starts on other nodes, which do
    not inherit the environment dlvm gives the head."""
    framework = FRAMEWORKS[job.framework]
    if elastic_range(job) and not framework.elastic:
        elastic = " and ".join(elastic_names())
        raise UsageError(
            f'job.nnodes "{job.nnodes}": a MIN:MAX range is for {elastic} only',
            hint="give a single number of nodes, or use framework: " + " or ".join(elastic_names()),
        )
    layout = job_layout(job, inventory, job_id=job_id, port=port, spec_env=spec_env)
    return framework.plan(job, layout)
