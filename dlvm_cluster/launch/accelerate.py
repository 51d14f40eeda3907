"""Accelerate: `accelerate launch --multi_gpu` on every node, each started by dlvm.

`--multi_gpu` even without GPUs: it makes Accelerate start torchrun, which joins the nodes
into one job. On nodes without GPUs the launch also exports ACCELERATE_USE_CPU=1 (what
`accelerate launch --cpu` sets): without it a plain `Accelerator()` finds no GPU and every
process runs alone (DistributedType.NO, one process), and the job "succeeds"; with it the
same script runs MULTI_CPU with gloo across the nodes. The obvious `--cpu --num_machines N`
does not fail either but silently runs N separate single-process jobs, one per node.

Accelerate runs Python itself: job.command is `script.py ARGS` or `-m package.module ARGS`;
a leading `python` is dropped.
"""

from __future__ import annotations

from dlvm_cluster.launch.plan import JobLayout, LaunchPlan, python_script
from dlvm_cluster.spec.model import Job


def plan(job: Job, layout: JobLayout) -> LaunchPlan:
    script = python_script(job.command)
    env = layout.env()
    if layout.gpus_per_node == 0:
        env["ACCELERATE_USE_CPU"] = "1"
    return layout.on_each_node(
        lambda index, node: [
            "accelerate",
            "launch",
            "--multi_gpu",
            f"--num_machines={len(layout.nodes)}",
            f"--num_processes={layout.world_size}",
            f"--machine_rank={index}",
            f"--main_process_ip={layout.head.ip}",
            f"--main_process_port={layout.port}",
            *script.words("--module"),
        ],
        env,
        check=layout.rank_check(job, require=True),
    )
