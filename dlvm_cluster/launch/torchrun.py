"""torchrun: one agent per node, each started by dlvm (no SSH between nodes).

A job of fixed size (`nnodes` unset or N) uses static rendezvous: node i runs
`torchrun --nnodes N --node-rank i --master-addr HEAD --master-port PORT`. It fails fast
when a node or worker dies (torchrun's default of no restarts), which is what a fixed-size
job wants; `max_restarts` applies to elastic jobs.

`nnodes: "MIN:MAX"` makes the job elastic: c10d rendezvous on the head's PORT, restarts up to
`max_restarts`, and nodes may join or leave between MIN and MAX. The head's agent hosts the
rendezvous store (`is_host=true`), so no agent has to guess from addresses. Every agent gets
TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1: on torch 2.13 sharing the rendezvous store with the
workers deadlocks a scale-up and makes worker restarts flaky (pytorch/pytorch#135712).

`--local-addr` is the node's IP, the address its agent gives the others.

torchrun runs Python itself, so job.command is `script.py ARGS` or `-m package.module ARGS`;
a leading `python`/`python3` is dropped (see plan.python_script).
"""

from __future__ import annotations

from dlvm_cluster.inventory import Node
from dlvm_cluster.launch.plan import JobLayout, LaunchPlan, elastic_range, python_script
from dlvm_cluster.spec.model import Job

LAST_CALL_TIMEOUT_S = 5
"""How long an elastic rendezvous waits for more nodes once MIN have joined (torch's default
is 30 s). dlvm starts every node at once, so stragglers are seconds behind; later ones join
through a scale-up restart anyway."""


def plan(job: Job, layout: JobLayout) -> LaunchPlan:
    script = python_script(job.command)
    elastic = elastic_range(job) is not None
    env = layout.env()
    if elastic:
        env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"

    def argv(index: int, node: Node) -> list[str]:
        if elastic:
            is_host = "true" if index == 0 else "false"
            rendezvous = [
                f"--nnodes={job.nnodes}",
                f"--nproc-per-node={layout.procs_per_node}",
                "--rdzv-backend=c10d",
                f"--rdzv-endpoint={_endpoint(layout.head.ip, layout.port)}",
                f"--rdzv-id={layout.job_id}",
                f"--rdzv-conf=is_host={is_host},last_call_timeout={LAST_CALL_TIMEOUT_S}",
                f"--max-restarts={job.max_restarts}",
            ]
        else:
            rendezvous = [
                f"--nnodes={len(layout.nodes)}",
                f"--node-rank={index}",
                f"--nproc-per-node={layout.procs_per_node}",
                f"--master-addr={layout.head.ip}",
                f"--master-port={layout.port}",
            ]
        return ["torchrun", *rendezvous, f"--local-addr={node.ip}", *script.words("-m")]

    return layout.on_each_node(argv, env, check=layout.rank_check(job, require=False))


def _endpoint(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
