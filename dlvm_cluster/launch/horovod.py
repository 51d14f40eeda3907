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

from dlvm_cluster.launch.plan import JobLayout, LaunchPlan, python_program, ssh_port
from dlvm_cluster.shell import ShellText
from dlvm_cluster.spec.model import Job


def plan(job: Job, layout: JobLayout) -> LaunchPlan:
    argv = ["horovodrun", "-np", str(layout.world_size), "-H", layout.hosts, "--gloo"]
    ssh = ssh_port(layout.nodes)
    if ssh != 22:
        argv += ["--ssh-port", str(ssh)]
    argv.append(ShellText(python_program(job.command)))
    return layout.on_head(argv)
