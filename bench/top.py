"""One `dlvm top` refresh against `pdsh` running the same node program on the same nodes.

    .venv/bin/python bench/top.py [--runs 7] [--nodes 3]

Every refresh runs nodeside/metrics.py on every node (it measures CPU and network for 0.5 s
of the round, whatever the tool). Timed, median of --runs after one warm-up:

- top refresh: a frame of the live view, over the connections its sampler opened once
  (in this process, DLVM_NO_AGENT=1: its own pool, as `dlvm top` holds it);
- top --json, agent: a whole `dlvm top NAME --json` process, the round through the
  cluster's agent;
- top --json, cold: the same with DLVM_NO_AGENT=1: a process and a new connection per node,
  which is what a refresh would cost if top connected anew each time;
- pdsh: `pdsh -R ssh -w HOSTS 'python3 -c SOURCE 0.5'` with the config `dlvm ssh-config`
  prints: the standard tool, new connections per round.

The ratio that matters: a live refresh against pdsh's round on the same nodes.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import time

from _harness import (
    Bench,
    check,
    install_signal_handlers,
    local_cluster,
    machine,
    median,
    run_timed,
    spread,
    table,
    wait_for_agent,
)

from dlvm_cluster import nodeside
from dlvm_cluster.orchestrate.watch.metrics import INTERVAL_S, Sampler
from dlvm_cluster.state import ClusterState


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--nodes", type=int, default=3)
    args = parser.parse_args()
    install_signal_handlers()
    source = nodeside.source("metrics").decode()
    with Bench() as bench, local_cluster(bench, "bench-top", args.nodes) as cluster:
        pdsh = ["pdsh", "-R", "ssh", "-f", str(cluster.count), "-w", ",".join(cluster.hosts)]
        pdsh.append(f"python3 -c {shlex.quote(source)} {INTERVAL_S}")
        pdsh_env = bench.env(PDSH_SSH_ARGS_APPEND=f"-F {cluster.ssh_config}")
        timings: dict[str, list[float]] = {"pdsh": [], "top --json, cold": []}
        for _ in range(args.runs + 1):
            timing, done = run_timed(pdsh, pdsh_env)
            check(done, "pdsh")
            timings["pdsh"].append(timing.wall)
            timing, done = bench.dlvm("top", cluster.name, "--json")
            check(done, "dlvm top --json")
            timings["top --json, cold"].append(timing.wall)
        if wait_for_agent(bench, cluster):
            timings["top --json, agent"] = []
            for _ in range(args.runs + 1):
                timing, done = bench.dlvm("top", cluster.name, "--json", agent=True)
                check(done, "dlvm top --json (agent)")
                timings["top --json, agent"].append(timing.wall)
        os.environ.update(DLVM_HOME=str(bench.home), DLVM_NO_AGENT="1")
        timings["top refresh"] = []
        with Sampler(ClusterState.for_name(cluster.name)) as sampler:
            for _ in range(args.runs + 1):
                start = time.perf_counter()
                frame = sampler.frame()
                timings["top refresh"].append(time.perf_counter() - start)
                if not all(node.answered for node in frame.nodes):
                    raise RuntimeError(f"a node did not answer: {frame.nodes}")
    measured = {name: values[1:] for name, values in timings.items()}  # warm-ups dropped
    base = median(measured["pdsh"])
    rows = [
        [name, f"{median(values):.3f}", spread(values), f"{median(values) / base:.2f}"]
        for name, values in sorted(measured.items(), key=lambda item: median(item[1]))
    ]
    print(f"\n{machine()}; {args.nodes} nodes; {args.runs} runs; node program: {INTERVAL_S} s")
    print(table(["one round", "median s", "range s", "vs pdsh"], rows))
    live = statistics.median(measured["top refresh"])
    print(f"\ntop refresh / pdsh round: {live / base:.2f}")


if __name__ == "__main__":
    main()
