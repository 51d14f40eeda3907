"""MPI: the head runs `mpirun`, which starts every process over SSH.

Only the head gets a command: `mpirun -np TOTAL -H ip:slots,... COMMAND`, with
- `--allow-run-as-root` when the head's user is root (Open MPI refuses root otherwise);
- `--bind-to none --map-by slot`: each process may use all its node's cores (Open MPI would
  pin a process to one core), and ranks fill the nodes in rank order;
- `--mca btl_tcp_if_include NET --mca oob_tcp_if_include NET`, NET being the smallest network
  holding every node's IP, so Open MPI does not probe other interfaces (1.2 s against 4.7 s
  to start a job here); left out when no such network can be derived;
- `--mca plm_rsh_args "-p PORT"` when the nodes' SSH port is not 22;
- `-x NAME` for every variable of the job's environment, since processes mpirun starts on
  other nodes do not inherit the head's: the provider's and the spec's env, the DLVM_*
  variables, the launch variables and PATH. Not DLVM_NODE_RANK, which would be the head's
  everywhere: MPI ranks (OMPI_COMM_WORLD_RANK, ..._LOCAL_RANK) say where a process is.

job.command is a whole command (`python3 train.py ARGS`); one that starts with a `.py`
script gets `python3`. This needs SSH from the head to every node.
"""

from __future__ import annotations

from dlvm_cluster.launch.plan import (
    JobLayout,
    LaunchPlan,
    covering_network,
    python_program,
    ssh_port,
)
from dlvm_cluster.shell import ShellText
from dlvm_cluster.spec.model import Job


def plan(job: Job, layout: JobLayout) -> LaunchPlan:
    env = layout.env()
    argv = ["mpirun"]
    if layout.head.user == "root":
        argv.append("--allow-run-as-root")
    argv += ["-np", str(layout.world_size), "-H", layout.hosts, "--bind-to", "none"]
    argv += ["--map-by", "slot"]
    network = covering_network(layout.nodes)
    if network:
        argv += ["--mca", "btl_tcp_if_include", network, "--mca", "oob_tcp_if_include", network]
    ssh = ssh_port(layout.nodes)
    if ssh != 22:
        argv += ["--mca", "plm_rsh_args", f"-p {ssh}"]
    for name in layout.forwarded_env:
        argv += ["-x", name]
    argv.append(ShellText(python_program(job.command)))
    return layout.on_head(argv, env, check=layout.rank_check(job, require=False))
