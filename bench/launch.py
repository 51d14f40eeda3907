"""Launch: `dlvm launch NAME` against the same torchrun lines typed by hand, on the same
2-node local cluster, in the same run.

The cluster's file pushes examples/train_ddp.py to ~/work and names the job (torchrun,
`train_ddp.py --steps S`, 1 process per node). Each round, in alternating order:

- dlvm: `dlvm launch NAME` in the foreground, as a user runs it (pushes the files, which are
  unchanged, starts the job on every node, follows it to its end, records it);
- by hand: on every node at once, `ssh -F CFG HOST 'cd ~/work && OMP_NUM_THREADS=1 torchrun
  --nnodes=2 --node-rank=R --nproc-per-node=1 --master-addr=HEAD --master-port=P
  --local-addr=IP train_ddp.py --steps S'`, CFG being what `dlvm ssh-config NAME` prints;
  from starting the first ssh to the end of the last.

Before each timed run the checkpoint train_ddp.py resumes from is removed (not timed), so
both train all S steps; both must print `done steps=S world_size=2`. Whole-process wall
times, medians of --runs, and their ratio. With --profile, one more `dlvm launch` runs under
cProfile and the functions dlvm spent its time in are printed (where the overhead goes).
Run as root from the repository root:

    .venv/bin/python bench/launch.py [--runs 5] [--steps 40] [--profile]
"""

from __future__ import annotations

import argparse
import json
import pstats
import random
import subprocess
import sys
import time
from pathlib import Path

from _harness import (
    REPO,
    Bench,
    Cluster,
    Timing,
    check,
    install_signal_handlers,
    local_cluster,
    machine,
    median,
    run_timed,
    spread,
    table,
)

NODES = 2
DONE = "done steps={steps} world_size=2"
HEADERS = ["way", "median s", "range s", "client CPU s", "ratio"]


def by_hand(bench: Bench, cluster: Cluster, ips: list[str], steps: int) -> Timing:
    """The torchrun lines a user types on each node, over ssh, all at once."""
    port = random.randint(20000, 29999)
    procs = []
    start = time.perf_counter()
    for rank, (host, ip) in enumerate(zip(cluster.hosts, ips, strict=True)):
        line = (
            f"cd ~/work && OMP_NUM_THREADS=1 torchrun --nnodes={NODES} --node-rank={rank} "
            f"--nproc-per-node=1 --master-addr={ips[0]} --master-port={port} "
            f"--local-addr={ip} train_ddp.py --steps {steps}"
        )
        procs.append(
            subprocess.Popen(
                ["ssh", "-F", str(cluster.ssh_config), host, line],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=bench.env(),
            )
        )
    outputs = [proc.communicate()[0] for proc in procs]
    wall = time.perf_counter() - start
    codes = [proc.returncode for proc in procs]
    if codes != [0] * NODES or DONE.format(steps=steps) not in outputs[0]:
        raise RuntimeError(f"by hand: exit {codes}\n{outputs[0][-2000:]}")
    return Timing(wall, 0.0)


def dlvm_launch(bench: Bench, cluster: Cluster, steps: int) -> Timing:
    timing, done = bench.dlvm("launch", cluster.name)
    check(done, "dlvm launch")
    if DONE.format(steps=steps) not in done.stdout:
        raise RuntimeError(f"dlvm launch did not train:\n{done.stdout[-2000:]}")
    return timing


def forget_checkpoint(bench: Bench, cluster: Cluster) -> None:
    check(bench.dlvm("exec", cluster.name, "-q", "--", "rm -rf ~/work/ckpt")[1], "rm ckpt")


def profile(bench: Bench, cluster: Cluster, out: Path) -> None:
    """One `dlvm launch` under cProfile; the top of its cumulative times."""
    forget_checkpoint(bench, cluster)
    argv = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "dlvm_cluster"]
    _, done = run_timed([*argv, "launch", cluster.name], bench.env(), cwd=bench.root)
    check(done, "dlvm launch under cProfile")
    stats = pstats.Stats(str(out))
    stats.sort_stats("cumulative").print_stats(40)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each (median)")
    parser.add_argument("--steps", type=int, default=40, help="training steps per run")
    parser.add_argument("--profile", action="store_true", help="profile one dlvm launch")
    args = parser.parse_args()
    install_signal_handlers()
    print(f"# launch benchmark; {machine()}")
    files = [(str(REPO / "examples" / "train_ddp.py"), "~/work")]
    job = [
        "env: {OMP_NUM_THREADS: 1}",
        "job:",
        "  framework: torchrun",
        "  workdir: ~/work",
        f"  command: train_ddp.py --steps {args.steps}",
        "  procs_per_node: 1",
    ]
    times: dict[str, list[Timing]] = {"dlvm": [], "by hand": []}
    with Bench() as bench, local_cluster(bench, "bench", NODES, files, job) as cluster:
        _, done = bench.dlvm("status", cluster.name, "--json")
        check(done, "dlvm status")
        ips = [node["ip"] for node in json.loads(done.stdout)["nodes"]]

        def one(way: str) -> Timing:
            forget_checkpoint(bench, cluster)
            if way == "dlvm":
                return dlvm_launch(bench, cluster, args.steps)
            return by_hand(bench, cluster, ips, args.steps)

        # One untimed run of each: caches warm (the Python modules torch loads) for both.
        one("dlvm")
        one("by hand")
        for run in range(args.runs):
            for way in ["dlvm", "by hand"] if run % 2 == 0 else ["by hand", "dlvm"]:
                times[way].append(one(way))
                print(f"# run {run + 1} {way}: {times[way][-1].wall:.2f}s", flush=True)
        if args.profile:
            profile(bench, cluster, bench.root / "launch.prof")
    base = median([t.wall for t in times["by hand"]])
    rows = []
    for way, found in times.items():
        walls = [t.wall for t in found]
        cpu = f"{median([t.cpu for t in found]):.2f}" if way == "dlvm" else "-"
        rows.append(
            [way, f"{median(walls):.2f}", spread(walls), cpu, f"{median(walls) / base:.2f}x"]
        )
    print()
    print(f"## `dlvm launch` vs torchrun by hand over ssh, {NODES} nodes; {machine()}")
    print(table(HEADERS, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
