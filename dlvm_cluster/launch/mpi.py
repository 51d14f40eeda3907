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

from collections.abc import Mapping

from dlvm_cluster.inventory import Inventory
from dlvm_cluster.launch.environment import node_environment
from dlvm_cluster.launch.plan import (
    NO_ENV,
    LaunchPlan,
    ShellText,
    covering_network,
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
    env = jobs.env()
    argv = ["mpirun"]
    if jobs.head.user == "root":
        argv.append("--allow-run-as-root")
    argv += ["-np", str(jobs.world_size), "-H", jobs.hosts, "--bind-to", "none"]
    argv += ["--map-by", "slot"]
    network = covering_network(jobs.nodes)
    if network:
        argv += ["--mca", "btl_tcp_if_include", network, "--mca", "oob_tcp_if_include", network]
    ssh = ssh_port(jobs.nodes)
    if ssh != 22:
        argv += ["--mca", "plm_rsh_args", f"-p {ssh}"]
    contract = node_environment(inventory, jobs.head, {})  # the provider's env and DLVM_*
    names = [*inventory.env, *spec_env, *contract, *env, "DLVM_HOSTFILE", "PATH"]
    for name in dict.fromkeys(names):
        if name != "DLVM_NODE_RANK":
            argv += ["-x", name]
    argv.append(ShellText(python_program(job.command)))
    return jobs.on_head(argv, env)
