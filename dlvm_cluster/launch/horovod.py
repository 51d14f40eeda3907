"""Horovod: the head runs `horovodrun --gloo`, which starts every worker over SSH.

horovodrun is its own multi-node launcher, so only the head gets a command:
`horovodrun -np TOTAL -H ip:slots,... --gloo COMMAND`. It needs SSH from the head to every
node, the head itself included (keys the cluster already shares), and forwards the head's
whole environment to every worker, so workers on other nodes see the head's
DLVM_NODE_RANK (0); Horovod's own HOROVOD_RANK and HOROVOD_LOCAL_RANK are the ones to use.

Gloo, not MPI, because it needs no MPI installation and was seen to work on these
machines; a cluster with MPI can use framework `mpi`. job.command is a whole command
(`python3 train.py ARGS`); a command that starts with a `.py` script gets `python3`.
"""

from __future__ import annotations

from collections.abc import Mapping

from dlvm_cluster.inventory import Inventory
from dlvm_cluster.launch.plan import (
    NO_ENV,
    LaunchPlan,
    ShellText,
    layout,
    python_program,
    ssh_port,
)
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
    argv = ["horovodrun", "-np", str(jobs.world_size), "-H", jobs.hosts, "--gloo"]
    ssh = ssh_port(jobs.nodes)
    if ssh != 22:
        argv += ["--ssh-port", str(ssh)]
    argv.append(ShellText(python_program(job.command)))
    return jobs.on_head(argv)
