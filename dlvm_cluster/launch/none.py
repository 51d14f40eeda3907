"""No launcher: job.command runs as written, once on every node of the job.

For launchers of your own: the environment says where you are (DLVM_NODE_RANK,
DLVM_NUM_NODES, DLVM_PROCS_PER_NODE, DLVM_WORLD_SIZE, MASTER_ADDR, MASTER_PORT) and
DLVM_HOSTFILE lists the nodes, e.g.
`torchrun --nnodes=$DLVM_NUM_NODES --node-rank=$DLVM_NODE_RANK ... train.py`.
"""

from __future__ import annotations

from collections.abc import Mapping

from dlvm_cluster.inventory import Inventory
from dlvm_cluster.launch.plan import NO_ENV, LaunchPlan, NodeLaunch, ShellText, layout
from dlvm_cluster.spec.model import Job


def plan(
    job: Job,
    inventory: Inventory,
    *,
    job_id: str,
    port: int,
    spec_env: Mapping[str, object] = NO_ENV,
) -> LaunchPlan:
    jobs = layout(job, inventory, job_id=job_id, port=port)
    command = jobs.command([ShellText(job.command)])
    launches = [NodeLaunch(node=node, command=command, env=jobs.env()) for node in jobs.nodes]
    return jobs.plan(launches)
