"""No launcher: job.command runs as written, once on every node of the job.

For launchers of your own: the environment says where you are (DLVM_NODE_RANK,
DLVM_NUM_NODES, DLVM_PROCS_PER_NODE, DLVM_WORLD_SIZE, MASTER_ADDR, MASTER_PORT) and
DLVM_HOSTFILE lists the nodes, e.g.
`torchrun --nnodes=$DLVM_NUM_NODES --node-rank=$DLVM_NODE_RANK ... train.py`.
"""

from __future__ import annotations

from dlvm_cluster.launch.plan import JobLayout, LaunchPlan
from dlvm_cluster.shell import ShellText
from dlvm_cluster.spec.model import Job


def plan(job: Job, layout: JobLayout) -> LaunchPlan:
    return layout.on_each_node(lambda index, node: [ShellText(job.command)])
