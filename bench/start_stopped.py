"""Starting a stopped cluster against a fresh `dlvm up` of the same spec, on the local provider:
`dlvm up` on the stopped cluster (starts the nodes on their disks, waits for SSH, finds files
and setup unchanged) and `dlvm start` (starts them and waits for SSH), each against `up` of
a new cluster of the same spec (2 nodes, 50 files, a one-line setup: the least a fresh `up`
can do, so the hardest case for the ratio).

    .venv/bin/python bench/start_stopped.py [--runs 3] [--nodes 2]
"""

from __future__ import annotations

import argparse
from collections import defaultdict

from _harness import (
    Bench,
    check,
    install_signal_handlers,
    machine,
    median,
    spread,
    table,
    unique_name,
)
from scale import down, write_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=2)
    args = parser.parse_args()
    install_signal_handlers()
    walls: dict[str, list[float]] = defaultdict(list)
    with Bench() as bench:
        for _ in range(args.runs):
            name = unique_name("bench-start")
            spec = write_spec(bench, name, args.nodes)
            try:
                fresh, done = bench.dlvm("up", str(spec), "--yes", "--quiet")
                check(done, "dlvm up (fresh)")
                walls["up, fresh"].append(fresh.wall)
                check(bench.dlvm("stop", name, "--quiet")[1], "dlvm stop")
                again, done = bench.dlvm("up", str(spec), "--yes", "--quiet")
                check(done, "dlvm up (stopped)")
                walls["up, stopped cluster"].append(again.wall)
                check(bench.dlvm("stop", name, "--quiet")[1], "dlvm stop")
                started, done = bench.dlvm("start", name, "--quiet")
                check(done, "dlvm start")
                walls["start, stopped cluster"].append(started.wall)
            finally:
                down(bench, name)
    fresh = median(walls["up, fresh"])
    rows = [
        [label, f"{median(values):.2f} s", spread(values), f"{median(values) / fresh:.2f}x"]
        for label, values in walls.items()
    ]
    print(f"\n{machine()}; {args.nodes} nodes; median of {args.runs} runs")
    print(table(["run", "wall", "range", "vs fresh up"], rows))


if __name__ == "__main__":
    main()
