"""Elastic training through scale events: a detached torchrun job (nnodes 1:4) keeps
training while the cluster goes 2 -> 3 -> 2 nodes; the step never goes back beyond the
last checkpoint and the world size follows the node count."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from harness import REPO, Cli, unique_name, wait_until

pytestmark = pytest.mark.training


def _log_text(cli: Cli, name: str, job: str) -> str:
    return cli.run("logs", name, job, timeout=120).stdout


def _wait_for(cli: Cli, name: str, job: str, pattern: str, timeout: float = 240) -> str:
    """The job's log, once `pattern` appears in it."""

    def log_with_pattern() -> str:
        text = _log_text(cli, name, job)
        return text if re.search(pattern, text) else ""

    return wait_until(
        log_with_pattern,
        timeout,
        interval=2,
        message=lambda: (
            f"{pattern!r} did not appear in time; log:\n{_log_text(cli, name, job)[-4000:]}"
        ),
    )


def test_training_continues_through_scale_up_and_down(cli: Cli, tmp_path: Path) -> None:
    name = unique_name("el")
    # A checkpoint every node can see, in storage: whichever node holds rank 0 after a
    # re-rendezvous must find it (each node's own disk would not have it).
    bucket = f"gs://dlvm-tests/elastic-{uuid.uuid4().hex[:8]}"
    spec = tmp_path / "elastic.yaml"
    spec.write_text(
        f"name: {name}\nprovider: {{kind: local}}\nnodes: {{count: 2}}\n"
        "env: {OMP_NUM_THREADS: 1, PG_TIMEOUT: 30, CKPT: /ckpt/model.pt}\n"
        f"storage:\n  - {{mount: /ckpt, bucket: {bucket}}}\n"
        f"files:\n  - {{src: {REPO / 'examples' / 'train_ddp.py'}, dst: ~/work}}\n"
        "job:\n  framework: torchrun\n  workdir: ~/work\n"
        "  command: train_ddp.py --steps 400 --step-time 0.05\n"
        '  nnodes: "1:4"\n  max_restarts: 5\n'
    )
    cli.run("up", str(spec), check=True)
    try:
        started = cli.run("launch", name, "--detach", check=True)
        job = re.search(r"job (\S+) started", started.stdout)
        assert job
        job_id = job.group(1)
        _wait_for(cli, name, job_id, r"world_size=2 .*\n(.*\n)*.*step [4-9]0 loss")
        grown = cli.run("scale", name, "3", "--yes", check=True, timeout=300)
        assert f"joined job(s) {job_id}" in grown.stdout
        _wait_for(cli, name, job_id, r"world_size=3 rank=0")
        _wait_for(cli, name, job_id, r"world_size=3 rank=0 [^\n]*\n(.*\n)*.*step \d+ loss")
        shrunk = cli.run("scale", name, "2", "--yes", check=True, timeout=300)
        assert f"stopped job(s) {job_id}" in shrunk.stdout
        text = _wait_for(cli, name, job_id, r"done steps=400 world_size=2", timeout=400)

        steps = [int(s) for s in re.findall(r"\] step (\d+) loss", text)]
        resumed = [int(s) for s in re.findall(r"resumed from \S+ at step (\d+)", text)]
        assert len(resumed) >= 2  # once after joining, once after leaving
        assert max(steps) == 400
        # Every resume starts from the last step logged (and checkpointed) before it.
        for point in resumed:
            assert point in steps
        worlds = re.findall(r"world_size=(\d) rank=0", text)
        assert "2" in worlds and "3" in worlds
        # node-2, removed by the scale down, still has its output in the job's logs.
        shown = cli.run("logs", name, job_id, check=True)
        assert "node-2 (removed by scale)" in shown.stderr + shown.stdout
        assert re.search(r"^\[node-2\] world_size=3 rank=\d", shown.stdout, re.M), shown.stdout

        def finished_state() -> str:
            state: str = cli.status(name)["jobs"][-1]["state"]  # type: ignore[index]
            return "" if state == "running" else state

        assert wait_until(finished_state, 60, interval=2, message="still running") == "succeeded"
        # The job's supervisor followed the nodes scale gave and took, and never restarted it.
        record = cli.status(name)["jobs"][-1]  # type: ignore[index]
        events = [event["text"] for event in record["events"]]  # type: ignore[index]
        assert "nodes changed by scale: following node-0, node-1, node-2" in events, events
        assert "nodes changed by scale: following node-0, node-1" in events, events
        assert record["restarts"] == 0  # type: ignore[index]
    finally:
        cli.run("down", name, "--yes")
