"""`dlvm scale 4 -> 8` against `dlvm up` of 8 nodes from nothing, on the local provider, with
the share of each run's time spent in Terraform, SSH readiness, file sync and setup.

    .venv/bin/python bench/scale.py [--runs 3]

The stages come from dlvm's own progress lines (`==> stage`, printed on stderr when it is not
a terminal), timestamped as they arrive; time before the first stage is start-up.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from collections import defaultdict
from pathlib import Path

from _harness import (
    Bench,
    check,
    dlvm_argv,
    down_cluster,
    install_signal_handlers,
    machine,
    median,
    table,
    unique_name,
)

CATEGORIES = (
    ("start-up", ()),
    ("terraform", ("terraform", "checking nodes")),
    ("ssh readiness", ("waiting for SSH",)),
    ("sync", ("sync ",)),
    ("setup", ("setup",)),
)


def _category(stage: str) -> str:
    for name, prefixes in CATEGORIES:
        if any(stage.startswith(prefix) for prefix in prefixes):
            return name
    return "other"


def staged_run(bench: Bench, *args: str) -> tuple[float, dict[str, float]]:
    """Run dlvm, returning its wall time and the seconds spent in each stage category."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [*dlvm_argv(), *args],
        env=bench.env(),
        cwd=bench.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    shares: dict[str, float] = defaultdict(float)
    current, since = "start-up", start
    for line in process.stderr:
        if line.startswith("==> "):
            now = time.perf_counter()
            shares[current] += now - since
            current, since = _category(line[4:].strip()), now
    process.wait()
    end = time.perf_counter()
    shares[current] += end - since
    if process.returncode != 0:
        raise RuntimeError(f"dlvm {' '.join(args)} exited {process.returncode}")
    return end - start, dict(shares)


def write_spec(bench: Bench, name: str, count: int) -> Path:
    payload = bench.root / "payload"
    payload.mkdir(exist_ok=True)
    for index in range(50):
        (payload / f"f{index}").write_bytes(os.urandom(20_000))
    spec = bench.root / f"{name}.yaml"
    spec.write_text(
        f"name: {name}\nprovider: {{kind: local}}\nnodes: {{count: {count}}}\n"
        f"files: [{{src: {payload}, dst: ~/payload}}]\nsetup: echo ready > ~/ready\n"
    )
    return spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    install_signal_handlers()
    results: dict[str, list[tuple[float, dict[str, float]]]] = defaultdict(list)
    with Bench() as bench:
        for _ in range(args.runs):
            name = unique_name("bench-scale")
            spec = write_spec(bench, name, 4)
            try:
                _, done = bench.dlvm("up", str(spec), "--yes", "--quiet")
                check(done, "dlvm up (4 nodes)")
                results["scale 4 -> 8"].append(staged_run(bench, "scale", name, "8", "--yes"))
            finally:
                down_cluster(bench, name)
            name = unique_name("bench-up")
            spec = write_spec(bench, name, 8)
            try:
                results["up 8 from nothing"].append(staged_run(bench, "up", str(spec), "--yes"))
            finally:
                down_cluster(bench, name)
    columns = [name for name, _ in CATEGORIES]
    rows = []
    for label, runs in results.items():
        wall = median([w for w, _ in runs])
        shares = [median([s.get(c, 0.0) for _, s in runs]) / wall * 100 for c in columns]
        rows.append([label, f"{wall:.2f} s", *(f"{share:.0f}%" for share in shares)])
    ratio = median([w for w, _ in results["scale 4 -> 8"]]) / median(
        [w for w, _ in results["up 8 from nothing"]]
    )
    print(f"\n{machine()}; median of {args.runs} runs")
    print(table(["run", "wall", *columns], rows))
    print(f"\nscale 4 -> 8 takes {ratio:.2f}x the time of up 8 from nothing")


if __name__ == "__main__":
    main()
