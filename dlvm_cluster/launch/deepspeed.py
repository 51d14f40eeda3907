"""DeepSpeed: `deepspeed --no_ssh --node_rank i` on every node, each started by dlvm.

DeepSpeed's default (`--launcher pdsh` from the head) also works, but needs pdsh on the
head and SSH between nodes, and forwards the environment only through `.deepspeed_env`.
With --no_ssh every node starts its own processes, like torchrun: no SSH between nodes,
each node gets the full dlvm environment, per-node logs and cancellation work as for any
job, and a missing node shows as that node's failure. The hostfile (written on every node)
still tells each node the world: the nodes in rank order and `slots` processes on each.

DeepSpeed runs Python itself: job.command is `script.py ARGS` or `-m package.module ARGS`
(passed as --module); a leading `python` is dropped. DeepSpeed appends `--local_rank=N` to
the script's arguments.
"""

from __future__ import annotations

from dlvm_cluster.launch.plan import HOSTFILE, JobLayout, LaunchPlan, python_script
from dlvm_cluster.spec.model import Job


def plan(job: Job, layout: JobLayout) -> LaunchPlan:
    script = python_script(job.command)
    return layout.on_each_node(
        lambda index, node: [
            "deepspeed",
            "--hostfile",
            HOSTFILE,
            "--no_ssh",
            f"--node_rank={index}",
            f"--master_addr={layout.head.ip}",
            f"--master_port={layout.port}",
            *script.words("--module"),
        ],
        check=layout.rank_check(job, require=True),
    )
