"""Fan-out: `dlvm exec NAME -- true`, cold and warm, against `pdsh -R ssh -w HOSTS true` on the
same nodes.

Brings up local clusters of 8, 32 and 64 nodes, one at a time (each brought down at the end,
also on an error or Ctrl-C), in a private DLVM_HOME (a temp dir). For each size it measures
the whole-process wall time, median of --runs runs (after one discarded warm-up), of:

- dlvm cold: `dlvm exec NAME -- true` with DLVM_NO_AGENT=1: connects to every node, runs,
  disconnects;
- dlvm warm: the same command through the cluster's agent, which keeps one connection per node
  open between commands (started by a first `dlvm exec`; every timed run must be served by
  it). Measured only where the agent exists (remote/agent_client.py) and answers;
- pdsh: `pdsh -R ssh -f N -w HOSTS true`, where OpenSSH reads the config that
  `dlvm ssh-config NAME` prints (PDSH_SSH_ARGS_APPEND="-F FILE"). That config pins
  KexAlgorithms curve25519-sha256 like dlvm does: the fair "standard tool on the same nodes";
- pdsh-pq (context): the same config without the KexAlgorithms line, so OpenSSH uses its
  default post-quantum exchange (sntrup761x25519), as a bare `pdsh -R ssh` would, and as the
  pdsh of the baseline measurements behind the targets did.

Before timing, pdsh and dlvm (cold and warm) run `hostname` once and every node must answer
with its own name. Each round runs every tool once, in a rotating order, so drifting machine
load hits them alike. Client CPU: user+system time of the client process and its children
(ssh for pdsh; not the agent, not the nodes' sshd).

With --minimal-bashrc the nodes' ~/.bashrc (each node has a private copy-on-write home) is
then emptied and everything measured again, to separate the cost of the node's shell start-up
(here root's .bashrc runs `pyenv init`) from the tools' own. Run as root from the repository
root:

    .venv/bin/python bench/fanout.py [--sizes 8,32,64] [--runs 7] [--minimal-bashrc]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Callable

from _harness import (
    Bench,
    Cluster,
    Timing,
    agent_served,
    check,
    install_signal_handlers,
    local_cluster,
    machine,
    median,
    pq_config,
    run_timed,
    spread,
    table,
    wait_for_agent,
)

Result = tuple[Timing, subprocess.CompletedProcess[str]]


def pdsh_argv(cluster: Cluster, command: str) -> list[str]:
    hosts = ",".join(cluster.hosts)
    return ["pdsh", "-R", "ssh", "-S", "-f", str(cluster.count), "-w", hosts, command]


def _ok(result: Result, what: str) -> Result:
    """The run must succeed on every node, silently."""
    check(result[1], what)
    if result[1].stderr.strip():
        raise RuntimeError(f"{what} wrote to stderr: {result[1].stderr.strip()[:500]}")
    return result


def check_dlvm_hostnames(done: subprocess.CompletedProcess[str], cluster: Cluster) -> None:
    check(done, "dlvm exec hostname")
    found = set(re.findall(r"^\[(node-\d+)\] (node-\d+)$", done.stdout, re.M))
    if found != {(f"node-{rank}", f"node-{rank}") for rank in range(cluster.count)}:
        raise RuntimeError(f"dlvm exec did not reach every node:\n{done.stdout}")


def verify(bench: Bench, cluster: Cluster) -> None:
    """Every node answers `hostname` with its own name, through pdsh and cold dlvm."""
    _, done = run_timed(
        pdsh_argv(cluster, "hostname"),
        bench.env(PDSH_SSH_ARGS_APPEND=f"-F {cluster.ssh_config}"),
    )
    check(done, "pdsh hostname")
    answers = {}
    for line in done.stdout.splitlines():
        host, _, name = line.partition(": ")
        answers[host] = name.strip()
    wanted = {host: f"node-{rank}" for rank, host in enumerate(cluster.hosts)}
    if answers != wanted:
        raise RuntimeError(f"pdsh did not reach every host: {answers} != {wanted}")
    check_dlvm_hostnames(bench.dlvm("exec", cluster.name, "--", "hostname")[1], cluster)


def start_agent(bench: Bench, cluster: Cluster) -> bool:
    """Start the agent, then check that warm output is right and served by it. False where
    there is no agent."""
    if not wait_for_agent(bench, cluster):
        return False
    served = agent_served(bench, cluster)
    check_dlvm_hostnames(bench.dlvm("exec", cluster.name, "--", "hostname", agent=True)[1], cluster)
    if agent_served(bench, cluster) != served + 1:
        raise RuntimeError("the agent answers but did not serve `dlvm exec`")
    return True


def measure(
    bench: Bench, cluster: Cluster, runs: int, warm: bool
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and client CPU seconds of every run, per tool."""
    pq = pq_config(cluster)
    commands: dict[str, Callable[[], Result]] = {
        "dlvm": lambda: _ok(bench.dlvm("exec", cluster.name, "--", "true"), "dlvm exec"),
        "pdsh": lambda: _ok(
            run_timed(
                pdsh_argv(cluster, "true"),
                bench.env(PDSH_SSH_ARGS_APPEND=f"-F {cluster.ssh_config}"),
            ),
            "pdsh",
        ),
        "pdsh-pq": lambda: _ok(
            run_timed(pdsh_argv(cluster, "true"), bench.env(PDSH_SSH_ARGS_APPEND=f"-F {pq}")),
            "pdsh (default kex)",
        ),
    }
    if warm:
        commands["warm"] = lambda: _ok(
            bench.dlvm("exec", cluster.name, "--", "true", agent=True), "dlvm exec (warm)"
        )
    tools = list(commands)
    for tool in tools:  # warm-up: page cache, sshd's first fork; not counted
        commands[tool]()
    served = agent_served(bench, cluster) if warm else 0
    wall: dict[str, list[float]] = {tool: [] for tool in tools}
    cpu: dict[str, list[float]] = {tool: [] for tool in tools}
    for index in range(runs):
        shift = index % len(tools)
        for tool in tools[shift:] + tools[:shift]:
            timing, _ = commands[tool]()
            wall[tool].append(timing.wall)
            cpu[tool].append(timing.cpu)
    if warm and agent_served(bench, cluster) != served + runs:
        raise RuntimeError("some warm runs were not served by the agent (they ran cold)")
    return wall, cpu


HEADERS = (
    "nodes",
    "dlvm cold s",
    "dlvm warm s",
    "pdsh s",
    "cold/pdsh",
    "warm/pdsh",
    "pdsh-pq s",
    "cold/pdsh-pq",
    "client CPU s cold/warm/pdsh/pq",
    "range s cold / pdsh",
)


def row(count: int, wall: dict[str, list[float]], cpu: dict[str, list[float]]) -> list[str]:
    w = {tool: median(values) for tool, values in wall.items()}
    c = {tool: median(values) for tool, values in cpu.items()}
    warm = "warm" in w
    return [
        str(count),
        f"{w['dlvm']:.2f}",
        f"{w['warm']:.2f}" if warm else "n/a",
        f"{w['pdsh']:.2f}",
        f"{w['dlvm'] / w['pdsh']:.2f}x",
        f"{w['warm'] / w['pdsh']:.2f}x" if warm else "n/a",
        f"{w['pdsh-pq']:.2f}",
        f"{w['dlvm'] / w['pdsh-pq']:.2f}x",
        " / ".join(
            f"{c[tool]:.2f}" if tool in c else "n/a" for tool in ("dlvm", "warm", "pdsh", "pdsh-pq")
        ),
        f"{spread(wall['dlvm'])} / {spread(wall['pdsh'])}",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="8,32,64", help="cluster sizes, comma-separated")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per tool (median)")
    parser.add_argument(
        "--minimal-bashrc",
        action="store_true",
        help="also measure with an empty ~/.bashrc on the nodes",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    install_signal_handlers()
    print(f"# fan-out benchmark; {machine()}")
    print(f"# median of {args.runs} runs, whole-process wall time", flush=True)
    rows: dict[str, list[list[str]]] = {"as-is": [], "minimal": []}
    warm_everywhere = True
    with Bench() as bench:
        for count in sizes:
            with local_cluster(bench, "bench", count) as cluster:
                verify(bench, cluster)
                warm = start_agent(bench, cluster)
                warm_everywhere = warm_everywhere and warm
                variants = ["as-is", "minimal"] if args.minimal_bashrc else ["as-is"]
                for variant in variants:
                    if variant == "minimal":
                        _, done = bench.dlvm("exec", cluster.name, "-q", "--", ": > ~/.bashrc")
                        check(done, "emptying ~/.bashrc")
                    rows[variant].append(row(count, *measure(bench, cluster, args.runs, warm)))
                    print(f"# {variant} ~/.bashrc", flush=True)
                    print(table(HEADERS, rows[variant][-1:]), flush=True)
    print()
    print(f"## `dlvm exec NAME -- true` vs `pdsh -R ssh true`; {machine()}")
    print(table(HEADERS, rows["as-is"]))
    if rows["minimal"]:
        print()
        print("## the same with an empty ~/.bashrc on the nodes")
        print(table(HEADERS, rows["minimal"]))
    print()
    print(
        "cold: every run opens a new connection to each node (DLVM_NO_AGENT=1).\n"
        "warm: through the cluster's agent, which keeps the connections open between commands"
        + ("." if warm_everywhere else "; n/a: no agent answered, warm was not measured.")
        + "\npdsh: OpenSSH with the config of `dlvm ssh-config`, which pins KexAlgorithms\n"
        "curve25519-sha256 (as dlvm's own connections do); pdsh-pq: the same config without\n"
        "that line, so OpenSSH's default post-quantum sntrup761x25519 exchange is used.\n"
        "ratios: dlvm/pdsh wall time, below 1 means dlvm is faster. targets at 64 nodes:\n"
        "cold 0.7x, warm 0.1x (set against the baseline's pdsh, which used the default kex)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
