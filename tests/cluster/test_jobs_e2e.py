"""Jobs on a real local cluster: torchrun training across nodes (static and elastic), a
failing rank stopping the others, detach / logs / cancel leaving no process behind."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import REPO, Cli, unique_name, wait_until
from system import processes_mentioning, sleep_marker, wait_for_processes


@pytest.fixture(scope="module")
def cluster(cli: Cli, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    name = unique_name("jb")
    folder = tmp_path_factory.mktemp("jobs")
    spec = _spec(folder, name, "framework: none\n  command: hostname")
    cli.run("up", str(spec), check=True)
    try:
        yield name, folder
    finally:
        cli.run("down", name, "--yes")


def _spec(folder: Path, name: str, job: str, env: str = "{}", extra: str = "") -> Path:
    path = folder / f"{name}-{abs(hash(job)) % 10**8}.yaml"
    path.write_text(
        f"name: {name}\n"
        "provider: {kind: local}\n"
        "nodes: {count: 2}\n"
        f"env: {env}\n"
        "files:\n"
        f"  - {{src: {REPO / 'examples' / 'train_ddp.py'}, dst: ~/work}}\n"
        + (f"  - {{src: {extra}, dst: ~/work}}\n" if extra else "")
        + f"job:\n  workdir: ~/work\n  {job}\n"
    )
    return path


def _losses(output: str) -> list[float]:
    return [float(m) for m in re.findall(r"step \d+ loss ([0-9.e+-]+)", output)]


@pytest.mark.training
def test_torchrun_two_nodes_two_procs_trains(cli: Cli, cluster: tuple[str, Path]) -> None:
    name, folder = cluster
    spec = _spec(
        folder,
        name,
        "framework: torchrun\n  command: train_ddp.py --steps 120\n  procs_per_node: 2",
        env="{OMP_NUM_THREADS: 1, CKPT: /tmp/static/model.pt}",
    )
    result = cli.run("launch", str(spec), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "world_size=4" in result.stdout
    assert re.search(r"\[node-0\] done steps=120 world_size=4", result.stdout)
    assert sorted(set(re.findall(r"world_size=4 rank=(\d)", result.stdout))) == list("0123")
    losses = _losses(result.stdout)
    assert len(losses) >= 5 and losses[-1] < losses[0]
    status = cli.status(name)
    assert status["jobs"][-1]["state"] == "succeeded"  # type: ignore[index]


@pytest.mark.training
def test_torchrun_elastic_range_starts_and_finishes(cli: Cli, cluster: tuple[str, Path]) -> None:
    name, folder = cluster
    spec = _spec(
        folder,
        name,
        'framework: torchrun\n  command: train_ddp.py --steps 60\n  nnodes: "1:3"',
        env="{OMP_NUM_THREADS: 1, CKPT: /tmp/elastic/model.pt}",
    )
    result = cli.run("launch", str(spec), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"done steps=60 world_size=2", result.stdout)


def test_failing_rank_stops_the_others(cli: Cli, cluster: tuple[str, Path]) -> None:
    name, folder = cluster
    marker = sleep_marker(619)
    spec = _spec(
        folder,
        name,
        "framework: none\n  command: "
        f"'[ $DLVM_NODE_RANK = 1 ] && echo rank1-broke && exit 4; {marker}'",
    )
    result = cli.run("launch", str(spec), timeout=300)
    assert result.returncode == 1
    assert "failed on node-1 (exit 4)" in result.stderr
    assert "rank1-broke" in result.stderr
    assert "Traceback" not in result.stderr
    assert processes_mentioning(marker) == []
    # node-0's `sleep 619` did not end by itself: the failure stopped it (no exit status).
    job = cli.status(name)["jobs"][-1]  # type: ignore[index]
    assert job["state"] == "failed" and job["exit_codes"]["node-1"] == 4
    assert job["exit_codes"]["node-0"] != 0


BROKEN = """
import os, sys, time
import torch.distributed as dist
dist.init_process_group("gloo")
if dist.get_rank() == 1:
    raise ValueError("rank 1 broke: the batch has no rows")
time.sleep(600)
"""


@pytest.mark.training
def test_a_failed_torchrun_job_quotes_the_ranks_exception(
    cli: Cli, cluster: tuple[str, Path]
) -> None:
    name, folder = cluster
    (folder / "broken.py").write_text(BROKEN)
    spec = _spec(
        folder,
        name,
        "framework: torchrun\n  command: broken.py",
        env="{OMP_NUM_THREADS: 1}",
        extra=str(folder / "broken.py"),
    )
    result = cli.run("launch", str(spec), timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    summary = result.stderr[result.stderr.index("error: job") :]
    # The rank's exception and where it was raised, not torchrun's ChildFailedError footer.
    assert re.search(
        r"\n  \[node-1\] (\[rank1\]: )?ValueError: rank 1 broke: the batch has no rows", summary
    ), summary
    assert 'broken.py", line 6, in <module>' in summary
    assert "ChildFailedError" not in summary and "Root Cause" not in summary


def test_detach_logs_cancel(cli: Cli, cluster: tuple[str, Path]) -> None:
    name, folder = cluster
    marker = sleep_marker(620)
    # The job starts a worker in a session of its own, as some launchers do: cancel must
    # still find it.
    spec = _spec(
        folder,
        name,
        f"framework: none\n  command: 'echo begun; setsid {marker} & {marker}'",
    )
    started = cli.run("launch", str(spec), "--detach", check=True)
    job_id = re.search(r"job (\S+) started", started.stdout)
    assert job_id
    wait_for_processes(marker, 4, timeout=30)  # two per node, survived dlvm exiting
    logs = cli.run("logs", name, job_id.group(1), check=True)
    assert "[node-0] begun" in logs.stdout and "[node-1] begun" in logs.stdout
    running = cli.status(name)["jobs"][-1]  # type: ignore[index]
    assert running["state"] == "running"
    cancelled = cli.run("cancel", name, job_id.group(1), check=True)
    assert "no process of it is left" in cancelled.stdout
    assert processes_mentioning(marker) == []
    assert cli.status(name)["jobs"][-1]["state"] == "cancelled"  # type: ignore[index]


def _job_state(cli: Cli, name: str, job_id: str) -> str:
    jobs = cli.status(name)["jobs"]
    return next(str(job["state"]) for job in jobs if job["id"] == job_id)  # type: ignore[index,union-attr]


def test_one_job_at_a_time_and_the_queue(cli: Cli, cluster: tuple[str, Path]) -> None:
    name, folder = cluster
    marker = sleep_marker(618)
    first = _spec(folder, name, f"framework: none\n  command: '{marker}'")
    started = cli.run("launch", str(first), "--detach", check=True)
    running = re.search(r"job (\S+) started", started.stdout)
    assert running
    wait_for_processes(marker, 2, timeout=60)
    jobs_before = len(cli.status(name)["jobs"])  # type: ignore[arg-type]

    # A second job is refused, naming the one that runs; nothing is recorded for it.
    second = _spec(folder, name, "framework: none\n  command: 'echo second-ran'")
    refused = cli.run("launch", str(second))
    assert refused.returncode == 2
    assert f"is running job {running.group(1)}" in refused.stderr
    assert len(cli.status(name)["jobs"]) == jobs_before  # type: ignore[arg-type]

    # Queued instead: listed by status; a queued job can be taken off the queue.
    queued = cli.run("launch", str(second), "--queue", check=True)
    waiting = re.search(r"job (\S+) queued", queued.stdout)
    assert waiting
    third = _spec(folder, name, "framework: none\n  command: 'echo third-ran'")
    dropped = re.search(r"job (\S+) queued", cli.run("launch", str(third), "--queue").stdout)
    assert dropped
    assert _job_state(cli, name, waiting.group(1)) == "queued"
    off = cli.run("cancel", name, dropped.group(1), check=True)
    assert f"job {dropped.group(1)} taken off the queue" in off.stdout
    assert _job_state(cli, name, dropped.group(1)) == "cancelled"

    # `cancel` with no id stops the running job; its supervisor then starts the queued one.
    stopped = cli.run("cancel", name, check=True)
    assert f"job {running.group(1)} stopped" in stopped.stdout
    assert processes_mentioning(marker) == []
    wait_until(
        lambda: _job_state(cli, name, waiting.group(1)) == "succeeded",
        120,
        interval=0.5,
        message=lambda: f"queued job is {_job_state(cli, name, waiting.group(1))}",
    )
    assert "[node-1] second-ran" in cli.run("logs", name, waiting.group(1), check=True).stdout
    assert _job_state(cli, name, dropped.group(1)) == "cancelled"  # never started

    # Nothing runs now: `cancel` with no id refuses rather than "stopping" an ended job.
    nothing = cli.run("cancel", name)
    assert nothing.returncode == 2 and "no job is running" in nothing.stderr
    assert _job_state(cli, name, waiting.group(1)) == "succeeded"


def test_launch_by_name_says_the_file_changed_since_up(cli: Cli, cluster: tuple[str, Path]) -> None:
    name, folder = cluster
    applied = _spec(folder, name, "framework: none\n  command: hostname")  # the file `up` read
    original = applied.read_text()
    applied.write_text(original.replace("env: {}", "env: {CPU_SHIM: 1}"))
    try:
        ran = cli.run("launch", name, check=True)
        assert f"warning: {applied} changed since `dlvm up` (changed: env)" in ran.stderr
        assert f"dlvm up {applied}" in ran.stderr
    finally:
        applied.write_text(original)
    assert "changed since" not in cli.run("launch", name, check=True).stderr


def test_a_quiet_job_says_what_its_processes_are_doing(cli: Cli, cluster: tuple[str, Path]) -> None:
    """A job that prints nothing while its processes compile (DeepSpeed's first op build)
    gets a line naming them; here a program named as the C++ compiler is, silent a while."""
    name, folder = cluster
    spec = _spec(
        folder,
        name,
        "framework: none\n  command: 'cp /bin/sleep ./cc1plus && ./cc1plus 8 && echo built'",
    )
    with cli.background("launch", str(spec), DLVM_QUIET_NOTE_SECONDS="2") as running:
        out, err = running.communicate(timeout=300)
    assert running.returncode == 0, err
    assert re.search(r"\[dlvm\] no output for \d+s; node-0: compiling \(cc1plus\)", err), err
    assert "a first build of native ops" in err
    assert "[node-0] built" in out
