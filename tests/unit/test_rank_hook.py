"""The rank hook (nodeside/rank_hook.py): what it notes in a rank, the check that fails a job
whose ranks were not distributed, and that the user's own sitecustomize still runs. Real
Python processes and, where marked, real torchrun on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dlvm_cluster import nodeside
from dlvm_cluster.inventory import Inventory, Node
from dlvm_cluster.launch.plan import RankCheck, job_layout, rank_hook_dir
from dlvm_cluster.nodeside.rank_hook import problems
from dlvm_cluster.remote.command import wrap
from dlvm_cluster.spec.model import Job


def install_hook(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_bytes(nodeside.source("rank_hook"))
    return folder


def run_rank(hook: Path, notes: Path, code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(hook), "DLVM_RANKS": str(notes), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def check(hook: Path, notes: Path, policy: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-I", "-S", str(hook / "sitecustomize.py")],
        env={**os.environ, "DLVM_RANKS": str(notes), "DLVM_RANK_CHECK": policy},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_problems_name_the_ranks_that_saw_another_world_or_ran_alone() -> None:
    assert problems({"0": ["joined 4"], "1": ["joined 4"]}, 4, "require") == ([], False)
    lines, failed = problems({"0": ["joined 4"], "1": ["joined 2"]}, 4, "warn")
    assert failed and lines == ["rank 1 joined a world of 2 process(es); this job has 4"]
    lines, failed = problems({"0": ["alone"], "1": ["alone"], "10": ["alone"]}, 4, "require")
    assert failed and lines[0].startswith("rank(s) 0, 1, 10 never joined")
    lines, failed = problems({"0": ["alone"]}, 4, "warn")
    assert not failed and lines[0].startswith("note: rank(s) 0 never joined")
    # A rank's helper interpreter (same RANK, never joins) does not make the rank alone.
    assert problems({"0": ["alone", "joined 4"]}, 4, "require") == ([], False)
    # Elastic: any size.
    assert problems({"0": ["joined 3"]}, 0, "warn") == ([], False)


def test_a_rank_is_line_buffered_notes_it_ran_alone_and_the_check_fails(tmp_path: Path) -> None:
    hook, notes = install_hook(tmp_path / "hook"), tmp_path / "ranks"
    shown = run_rank(hook, notes, "import sys; print(sys.stdout.line_buffering)", RANK="3")
    assert shown.returncode == 0 and shown.stdout == "True\n", shown.stderr
    assert [p.read_text() for p in notes.iterdir()] == ["alone\n"]
    failed = check(hook, notes, "require:4")
    assert failed.returncode == 3
    assert "dlvm: rank(s) 3 never joined the job's process group" in failed.stdout
    warned = check(hook, notes, "warn:4")
    assert warned.returncode == 0 and "note: rank(s) 3" in warned.stdout


def test_a_process_that_is_no_rank_is_left_alone(tmp_path: Path) -> None:
    hook, notes = install_hook(tmp_path / "hook"), tmp_path / "ranks"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "OMPI_COMM_WORLD_RANK")}
    shown = subprocess.run(
        [sys.executable, "-c", "import sys; print(sys.stdout.line_buffering)"],
        env={**env, "PYTHONPATH": str(hook), "DLVM_RANKS": str(notes)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.stdout == "False\n" and not notes.exists()


def test_the_users_own_sitecustomize_still_runs(tmp_path: Path) -> None:
    hook, notes = install_hook(tmp_path / "hook"), tmp_path / "ranks"
    user = tmp_path / "user"
    user.mkdir()
    (user / "sitecustomize.py").write_text("import builtins\nbuiltins.SHIM = 'on'\n")
    shown = subprocess.run(
        [sys.executable, "-c", "print(SHIM)"],
        env={**os.environ, "PYTHONPATH": f"{hook}:{user}", "RANK": "0", "DLVM_RANKS": str(notes)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0 and shown.stdout == "on\n", shown.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


JOINS = """
import torch.distributed as dist
dist.init_process_group("gloo")
print("joined", dist.get_world_size(), flush=True)
dist.destroy_process_group()
"""


@pytest.mark.training
@pytest.mark.parametrize(
    ("script", "policy", "code", "says"),
    [
        (JOINS, "require", 0, ""),
        ("print('no process group')", "require", 3, "dlvm: rank(s) 0, 1 never joined"),
        ("print('no process group')", "warn", 0, "dlvm: note: rank(s) 0, 1 never joined"),
    ],
)
def test_the_launch_command_fails_a_torchrun_job_whose_ranks_ran_alone(
    tmp_path: Path, script: str, policy: str, code: int, says: str
) -> None:
    """The launch command as a node runs it: torchrun with 2 processes, the hook loaded by
    the ranks from the job's folder, the check after torchrun exits."""
    (tmp_path / "train.py").write_text(script)
    node = Node(name="node-0", rank=0, ip="127.0.0.1", port=22, user="root", host_key="k")
    inventory = Inventory(cluster="demo", nodes=(node,), env={}, gpus_per_node=0)
    job = Job(framework="torchrun", command="train.py", procs_per_node=2)
    layout = job_layout(job, inventory, job_id="j1", port=free_port())
    install_hook(tmp_path / rank_hook_dir("demo", "j1").removeprefix("~/"))
    torchrun = str(Path(sys.executable).parent / "torchrun")
    argv = [torchrun, "--standalone", "--nproc-per-node=2"]  # a free port of its own
    command = layout.command([*argv, "train.py"], RankCheck(policy, 2))  # type: ignore[arg-type]
    env = {**os.environ, "HOME": str(tmp_path), "GLOO_SOCKET_IFNAME": "lo"}
    env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        ["sh", "-c", wrap(command, {}, str(tmp_path), cluster="demo")],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == code, done.stdout + done.stderr
    assert says in done.stdout
    if code == 0 and not says:
        assert done.stdout.count("joined 2") == 2
