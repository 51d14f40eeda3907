"""Horovod: the head runs `horovodrun --gloo`, which starts every worker over SSH.

horovodrun is its own multi-node launcher, so only the head gets a command:
`horovodrun -np TOTAL -H ip:slots,... --gloo COMMAND`. It needs SSH from the head to every
node, the head itself included (keys the cluster already shares), and forwards the head's
whole environment to every worker, so workers on other nodes see the head's
DLVM_NODE_RANK (0); Horovod's own HOROVOD_RANK and HOROVOD_LOCAL_RANK are the ones to use.

`nnodes: "MIN:MAX"` makes the job elastic: `--min-np`/`--max-np` (nodes times processes per
node) and, instead of `-H`, a host discovery command that horovodrun runs every second: it
prints the job's hostfile (DLVM_HOSTFILE) as `ip:slots` lines. `dlvm scale` rewrites that
file on every node, so horovodrun sees a node arrive and starts its workers there; the
script must use `hvd.elastic.run` (examples/train_horovod.py --elastic).

Gloo, not MPI, because it needs no MPI installation and was seen to work on these
machines; a cluster with MPI can use framework `mpi`. job.command is a whole command
(`python3 train.py ARGS`); a command that starts with a `.py` script gets `python3`.
Nodes get Horovod from `up` (its NodeSetup in launch/frameworks.py).
"""

from __future__ import annotations

from dlvm_cluster.launch.plan import (
    JobLayout,
    LaunchPlan,
    elastic_range,
    hostfile_path,
    python_program,
    ssh_port,
)
from dlvm_cluster.shell import ShellText, quote_path
from dlvm_cluster.spec.model import Job


def plan(job: Job, layout: JobLayout) -> LaunchPlan:
    argv = ["horovodrun", "-np", str(layout.world_size)]
    span = elastic_range(job)
    if span is None:
        argv += ["-H", layout.hosts]
    else:
        low, high = span
        argv += [
            "--min-np",
            str(low * layout.procs_per_node),
            "--max-np",
            str(high * layout.procs_per_node),
            "--host-discovery-script",
            discovery_command(layout),
        ]
    argv.append("--gloo")
    ssh = ssh_port(layout.nodes)
    if ssh != 22:
        argv += ["--ssh-port", str(ssh)]
    argv.append(ShellText(python_program(job.command)))
    return layout.on_head(argv)


def discovery_command(layout: JobLayout) -> str:
    """Shell text (horovodrun runs it with a shell) printing the job's hosts as `ip:slots`,
    read from its hostfile (`ip slots=N` lines) each time, so a rewritten file is seen."""
    hostfile = quote_path(hostfile_path(layout.cluster, layout.job_id))
    return f"sed -n 's/ slots=/:/p' {hostfile}"
