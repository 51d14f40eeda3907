"""Accelerate: `accelerate launch --multi_gpu` on every node, each started by dlvm.

`--multi_gpu` even without GPUs: it makes Accelerate start torchrun, which joins the nodes
into one job (MULTI_CPU with gloo when the script makes `Accelerator(cpu=True)`). The
obvious `--cpu --num_machines N` does not fail but silently runs N separate single-process
jobs, one per node.

Accelerate runs Python itself: job.command is `script.py ARGS` or `-m package.module ARGS`;
a leading `python` is dropped.
"""

from __future__ import annotations

from dlvm_cluster.launch.plan import JobLayout, LaunchPlan, python_script
from dlvm_cluster.spec.model import Job


def plan(job: Job, layout: JobLayout) -> LaunchPlan:
    script = python_script(job.command)
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
        ]
    )
