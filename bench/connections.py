"""How many SSH connections and provider constructions one command costs, on a 2-node local
cluster: a no-op `up` (the cluster already up) without and with a warm agent, `exec` with a
warm agent, `status`, and a
foreground `launch` during which node-1 vanishes (every process of its network namespace
killed) so that the supervisor replaces it and relaunches the job.

    python bench/connections.py            # as root (local nodes are network namespaces)

Each command runs in a process of its own under bench/_count_run.py, which counts
connections opened per node (`Connection.open`), SSH pools, provider constructions
(`providers.for_kind`) and state-file reads. The code measured is the checkout this script
sits in (PYTHONPATH is set to it), so the same script run from a checkout before a change and
after it gives the two columns to compare.
Targets: a no-op `up` opens at most one connection per node and builds the provider once,
and none in the command's own process when the cluster's agent is warm; `exec` warm opens
none in the command's own process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _harness import (
    REPO,
    Bench,
    check,
    down_cluster,
    install_signal_handlers,
    machine,
    unique_name,
    wait_for_agent,
)
from _harness import Cluster as BenchCluster

COUNTER = Path(__file__).resolve().with_name("_count_run.py")
VANISH_AFTER = 5.0  # seconds into the job node-1 is killed
JOB_COMMAND = "sleep 8; echo done"


def counted(bench: Bench, name: str, *args: str, agent: bool = False) -> dict[str, Any]:
    """Run `dlvm ARGS` under the counters; the counts (the command must succeed)."""
    out = bench.root / f"counts-{name}.json"
    env = bench.env(DLVM_COUNT_OUT=str(out), PYTHONPATH=str(REPO))
    if agent:
        env["DLVM_NO_AGENT"] = "0"
    done = subprocess.run(
        [sys.executable, str(COUNTER), *args],
        env=env,
        cwd=bench.root,
        capture_output=True,
        text=True,
    )
    check(done, f"dlvm {' '.join(args)}")
    counts: dict[str, Any] = json.loads(out.read_text())
    return counts


def vanish(bench: Bench, cluster: str, node: str) -> None:
    """Kill every process of the node's network namespace (as a VM vanishing)."""
    done = subprocess.run(
        [sys.executable, "-m", "dlvm_cluster", "status", cluster, "--json"],
        env=bench.env(PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
    )
    check(done, "dlvm status")
    nodes = {n["name"]: n for n in json.loads(done.stdout)["nodes"]}
    namespace = nodes[node]["provider_id"]
    pids = subprocess.run(
        ["ip", "netns", "pids", namespace], capture_output=True, text=True, check=True
    ).stdout.split()
    subprocess.run(["kill", "-KILL", *pids], check=False)


def recovery(bench: Bench, cluster: str, spec: Path) -> dict[str, Any]:
    """A foreground launch whose node-1 vanishes VANISH_AFTER seconds in: its counts."""
    out = bench.root / "counts-recovery.json"
    env = bench.env(DLVM_COUNT_OUT=str(out), PYTHONPATH=str(REPO))
    process = subprocess.Popen(
        [sys.executable, str(COUNTER), "launch", str(spec)],
        env=env,
        cwd=bench.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(VANISH_AFTER)
    vanish(bench, cluster, "node-1")
    output, _ = process.communicate(timeout=600)
    if process.returncode != 0:
        raise RuntimeError(f"the launch failed ({process.returncode}):\n{output[-3000:]}")
    counts: dict[str, Any] = json.loads(out.read_text())
    return counts


def describe(counts: dict[str, Any], nodes: int) -> str:
    connections = counts.get("connections", {})
    per_node = ", ".join(f"{n} {c}" for n, c in sorted(connections.items())) or "none"
    total = sum(connections.values())
    reads = counts.get("reads", {})
    job_reads = sum(v for k, v in reads.items() if k.startswith("jobs/"))
    return (
        f"connections {total} ({total / nodes:.1f} per node: {per_node}); "
        f"pools {sum(counts.get('pools', {}).values())}; "
        f"provider constructions {sum(counts.get('providers', {}).values())}; "
        f"inventory reads {reads.get('inventory.json', 0)}; job-record reads {job_reads}"
    )


def main() -> None:
    install_signal_handlers()
    print(f"# {machine()}; code measured: {REPO}", flush=True)
    nodes = 2
    with Bench() as bench:
        name = unique_name("conn")
        spec = bench.root / f"{name}.yaml"
        spec.write_text(
            f"name: {name}\nprovider: {{kind: local}}\nnodes: {{count: {nodes}}}\n"
            "setup: echo ready\n"
            f"job: {{framework: none, command: '{JOB_COMMAND}'}}\n"
        )
        results: dict[str, dict[str, Any]] = {}
        try:
            results["first up"] = counted(bench, "up1", "up", str(spec), "--yes", "--quiet")
            results["no-op up"] = counted(bench, "up2", "up", str(spec), "--quiet")
            results["status"] = counted(bench, "status", "status", name, "--json")
            os.environ["PYTHONPATH"] = str(REPO)
            if wait_for_agent(bench, BenchCluster(name, nodes, spec, spec, ())):
                results["exec warm"] = counted(
                    bench, "exec", "exec", name, "--", "true", agent=True
                )
                results["no-op up, warm"] = counted(
                    bench, "up3", "up", str(spec), "--quiet", agent=True
                )
            results["recovery (launch)"] = recovery(bench, name, spec)
        finally:
            down_cluster(bench, name)
        for command, counts in results.items():
            print(f"{command:19} {describe(counts, nodes)}")
        print(json.dumps(results, sort_keys=True))


if __name__ == "__main__":
    main()
