"""Recovery from a lost node against starting afresh, on the local provider: a 2-node cluster
trains (torchrun, examples/train_ddp.py, checkpoints on shared storage); every process of
node-1's network namespace is killed (as a VM vanishing), and the time from that to training
output again is split by stage from the job's events; the baseline is a fresh `up` of one
node plus a launch of the same job, to its first line of output.

    .venv/bin/python bench/recovery.py

Stages: detect (kill -> the supervisor saw the failure), stop (-> the job stopped on the
other nodes), replace (-> the provider made the new node), setup (-> keys, mesh, storage,
files and setup done), relaunch (-> the first line of the job's output after its restart).
Targets: detect within 10 s; the whole recovery within 1.5x the baseline.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from _harness import (
    REPO,
    Bench,
    check,
    dlvm_argv,
    down_cluster,
    install_signal_handlers,
    machine,
    table,
    unique_name,
)

STEPS = 400  # long enough that the job is still training when the node goes
JOB = f"train_ddp.py --steps {STEPS} --step-time 0.05"
STAGES = (
    ("detect", "failure: "),
    ("stop", "job stopped "),
    ("replace", "node replaced: "),
    ("setup", "setup done "),
    ("relaunch", "resumed: "),
)


def write_spec(bench: Bench, name: str, count: int, steps: int = STEPS) -> Path:
    spec = bench.root / f"{name}.yaml"
    spec.write_text(
        f"name: {name}\nprovider: {{kind: local}}\nnodes: {{count: {count}}}\n"
        "env: {OMP_NUM_THREADS: 1, PG_TIMEOUT: 30}\n"
        f"storage: [{{mount: /mnt/{name}, bucket: gs://{name}/ckpt}}]\n"
        f"files: [{{src: {REPO / 'examples' / 'train_ddp.py'}, dst: ~/work}}]\n"
        "job:\n  framework: torchrun\n  workdir: ~/work\n"
        f"  command: train_ddp.py --steps {steps} --step-time 0.05\n"
    )
    return spec


def down(bench: Bench, name: str) -> None:
    """The cluster, and the folder standing in for its bucket."""
    down_cluster(bench, name)
    shutil.rmtree(bench.home / "storage" / name, ignore_errors=True)


class Launch:
    """`dlvm launch` in the background, its stdout lines timestamped as they come."""

    def __init__(self, bench: Bench, spec: Path) -> None:
        self.errors = bench.root / f"{spec.stem}.stderr"
        with open(self.errors, "w") as errors:
            self.process = subprocess.Popen(
                [*dlvm_argv(), "launch", str(spec)],
                env=bench.env(),
                cwd=bench.root,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
            )
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append((time.time(), line))

    def first(self, pattern: str, timeout: float = 300) -> float:
        """When a line matching `pattern` came (waiting for it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for when, line in list(self.lines):
                if re.search(pattern, line):
                    return when
            if self.process.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise RuntimeError(
            f"no line matching {pattern!r}: {''.join(text for _, text in self.lines)}"
        )

    def wait(self) -> int:
        code = self.process.wait(timeout=600)
        self._reader.join(timeout=10)
        return code


def job_events(bench: Bench, name: str) -> dict[str, Any]:
    _, done = bench.dlvm("status", name, "--json")
    check(done, "dlvm status")
    job: dict[str, Any] = json.loads(done.stdout)["jobs"][-1]
    return job


def recovery(bench: Bench) -> tuple[dict[str, float], dict[str, Any]]:
    name = unique_name("bench-rec")
    spec = write_spec(bench, name, 2)
    try:
        _, done = bench.dlvm("up", str(spec), "--yes", "--quiet")
        check(done, "dlvm up (2 nodes)")
        _, done = bench.dlvm("status", name, "--json")
        namespace = json.loads(done.stdout)["nodes"][1]["provider_id"]
        launch = Launch(bench, spec)
        launch.first(r"step 40 loss")
        pids = subprocess.run(
            ["ip", "netns", "pids", namespace], capture_output=True, text=True, check=True
        ).stdout.split()
        killed = time.time()
        subprocess.run(["kill", "-KILL", *pids], check=False)
        if launch.wait() != 0:
            raise RuntimeError(
                "the launch did not finish after the recovery:\n"
                + launch.errors.read_text()[-3000:]
            )
        job = job_events(bench, name)
    finally:
        down(bench, name)
    times = {}
    for stage, prefix in STAGES:
        times[stage] = next(e["time"] for e in job["events"] if e["text"].startswith(prefix))
    stages, previous = {}, killed
    for stage, _ in STAGES:
        stages[stage] = times[stage] - previous
        previous = times[stage]
    return stages, job


def baseline(bench: Bench) -> tuple[float, float]:
    """A fresh `up` of one node plus a launch: (seconds of up, seconds to the first output)."""
    name = unique_name("bench-base")
    spec = write_spec(bench, name, 1, steps=40)
    try:
        start = time.time()
        _, done = bench.dlvm("up", str(spec), "--yes", "--quiet")
        check(done, "dlvm up (1 node)")
        up_done = time.time()
        launch = Launch(bench, spec)
        first = launch.first(r"^\[node-0\] ")
        launch.wait()
    finally:
        down(bench, name)
    return up_done - start, first - start


def main() -> None:
    install_signal_handlers()
    with Bench() as bench:
        stages, job = recovery(bench)
        up_seconds, base = baseline(bench)
    total = sum(stages.values())
    rows = [[stage, f"{seconds:.2f} s"] for stage, seconds in stages.items()]
    rows.append(["recovery (kill -> output again)", f"{total:.2f} s"])
    rows.append(["baseline: up 1 node", f"{up_seconds:.2f} s"])
    rows.append(["baseline: up 1 node + launch -> first output", f"{base:.2f} s"])
    print(f"\n{machine()}; one run; job {JOB}")
    print(table(["stage", "seconds"], rows))
    print(f"\nrecoveries {job['recoveries']}, restarts {job['restarts']}, state {job['state']}")
    print(f"detect: {stages['detect']:.2f} s (target: within 10 s)")
    print(f"recovery takes {total / base:.2f}x the baseline (target: within 1.5x)")


if __name__ == "__main__":
    main()
