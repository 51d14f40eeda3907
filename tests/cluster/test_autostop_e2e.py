"""Stopped clusters and the autostop watcher on one real 2-node local cluster.

Minutes are made seconds with DLVM_AUTOSTOP_MINUTE_SECONDS (for tests only), so the file's
`idle_minutes: 1` is an idle limit of a few seconds. Whether a node is powered off is read
from the machine (its namespace holds no process), not from dlvm. The tests share the
cluster and run in file order; each first makes sure it runs (`up` starts it if stopped).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import REPO, Cli, unique_name, wait_until
from system import namespace_processes, namespaces

MINUTE = 4  # seconds: the idle limit and the hang timeout of the file below
SETUP = "echo ran >> ~/setup-count\n"


def _spec(folder: Path, name: str, autostop: str, job: str = "echo hi", setup: str = SETUP) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(
        f"name: {name}\nprovider: {{kind: local}}\nnodes: {{count: 2}}\n"
        f"setup: |\n  {setup}"
        f"job:\n  framework: none\n  command: {job!r}\n  hang_timeout_minutes: 1\n"
        f"autostop: {autostop}\n"
    )
    return path


@pytest.fixture(scope="module")
def cluster(cli: Cli, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    name = unique_name("as")
    folder = tmp_path_factory.mktemp("autostop")
    before = os.environ.get("DLVM_AUTOSTOP_MINUTE_SECONDS")
    os.environ["DLVM_AUTOSTOP_MINUTE_SECONDS"] = str(MINUTE)
    _spec(folder, name, "{idle_minutes: 1}")
    try:
        cli.run("up", str(folder / f"{name}.yaml"), check=True)
        yield name, folder
    finally:
        cli.run("down", name, "--yes")
        if before is None:
            os.environ.pop("DLVM_AUTOSTOP_MINUTE_SECONDS", None)
        else:
            os.environ["DLVM_AUTOSTOP_MINUTE_SECONDS"] = before


def powered_off(name: str) -> bool:
    """Every node's namespace is there and holds no process: the machine says stopped."""
    return len(namespaces(name)) == 2 and not namespace_processes(name)


def head_files(cli: Cli, name: str) -> Path:
    """The head node's dlvm folder, as its copy-on-write home keeps it on the host's disk."""
    upper = cli.home / "clusters" / name / "nodes" / "node-0" / "home-upper"
    return upper / ".dlvm" / "node-files" / name


def _up(cli: Cli, name: str, folder: Path) -> str:
    return cli.run("up", str(folder / f"{name}.yaml"), check=True).stdout


def _node_states(cli: Cli, name: str) -> list[tuple[str, str]]:
    nodes = cli.status(name)["nodes"]
    return [(n["state"], n["stopped_by"]) for n in nodes]  # type: ignore[attr-defined,index]


def test_stop_and_start_by_hand_keep_disk_and_host_keys(
    cli: Cli, cluster: tuple[str, Path]
) -> None:
    name, folder = cluster
    _up(cli, name, folder)
    cli.run("autostop", name, "--off", check=True)  # only the user stops it here
    cli.run("exec", name, "--", "echo kept > ~/by-hand", check=True)
    cli.run("stop", name, check=True)
    assert powered_off(name)
    assert _node_states(cli, name) == [("stopped", "user")] * 2
    started = cli.run("start", name, check=True)
    assert "2 node(s) started" in started.stdout
    # The pinned host keys still match (exec refuses a changed key), the home is the same.
    out = cli.run("exec", name, "--", "cat ~/by-hand ~/setup-count", check=True).stdout
    assert out.count("kept") == 2 and out.count("ran") == 2


def test_open_session_keeps_cluster_up(cli: Cli, cluster: tuple[str, Path]) -> None:
    name, folder = cluster
    _up(cli, name, folder)
    # Three idle limits long: without counting the session, the nodes power off under it.
    session = cli.run("exec", name, "--", f"sleep {3 * MINUTE}", timeout=120)
    assert session.returncode == 0, session.stderr
    assert not powered_off(name)


def test_open_ssh_shell_keeps_cluster_up(cli: Cli, cluster: tuple[str, Path]) -> None:
    name, folder = cluster
    _up(cli, name, folder)
    shell = subprocess.Popen(
        [sys.executable, "-m", "dlvm_cluster", "ssh", name, "node-1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli.env(),
        cwd=REPO,
    )
    try:
        time.sleep(3 * MINUTE)  # three idle limits with a shell open on a node that is not the head
        assert not powered_off(name)
        out, _ = shell.communicate("echo still-here\n", timeout=30)
        assert "still-here" in out
    finally:
        if shell.poll() is None:
            shell.kill()
            shell.communicate()


def test_progressing_job_keeps_cluster_up(cli: Cli, cluster: tuple[str, Path]) -> None:
    name, folder = cluster
    job = f"for i in $(seq {6 * MINUTE}); do echo step $i; sleep 0.5; done"
    spec = _spec(folder, name, "{idle_minutes: 1}", job)
    _up(cli, name, folder)
    started = cli.run("launch", str(spec), "--detach", check=True)
    job_id = re.search(r"job (\S+) started", started.stdout)
    assert job_id

    def ended() -> str:
        jobs = cli.status(name)["jobs"]
        state = str(jobs[-1]["state"])  # type: ignore[index]
        return "" if state == "running" else state

    # The job would be killed by a power-off (and end `failed`) were it not counted as busy.
    assert wait_until(ended, 12 * MINUTE, interval=1) == "succeeded"


def test_killed_watcher_is_noticed(cli: Cli, cluster: tuple[str, Path]) -> None:
    name, folder = cluster
    _up(cli, name, folder)
    wait_until(lambda: cli.status(name)["autostop_problem"] is None, 30, interval=0.5)
    supervisor = int((head_files(cli, name) / "autostop" / "supervisor.pid").read_text())
    os.killpg(supervisor, signal.SIGKILL)  # the supervisor and the watcher it runs

    def warned() -> str:
        return str(cli.status(name)["autostop_problem"] or "")

    assert "autostop is not active" in wait_until(warned, 60, interval=1)
    cli.run("autostop", name, "--idle", "1", check=True)  # rewrites the config, restarts it
    wait_until(lambda: cli.status(name)["autostop_problem"] is None, 30, interval=0.5)


def test_idle_cluster_stops_itself_and_up_restarts_it(cli: Cli, cluster: tuple[str, Path]) -> None:
    name, folder = cluster
    _up(cli, name, folder)
    cli.run("exec", name, "--", "echo before > /tmp/written; echo home > ~/written", check=True)
    wait_until(lambda: powered_off(name), 20 * MINUTE, interval=0.5, message="still running")
    status = cli.status(name)
    assert _node_states(cli, name) == [("stopped", "autostop")] * 2
    assert str(status["stopped_by"]).startswith("autostop at ")
    restarted = _up(cli, name, folder)
    assert "2 started on their disks" in restarted
    out = cli.run("exec", name, "--", "cat /tmp/written ~/written ~/setup-count", check=True)
    # Files written before are there, and setup did not run again (one line per node).
    assert out.stdout.count("before") == 2 and out.stdout.count("home") == 2
    assert out.stdout.count("ran") == 2


def test_hung_job_does_not_keep_cluster_up(cli: Cli, cluster: tuple[str, Path]) -> None:
    name, folder = cluster
    spec = _spec(folder, name, "{idle_minutes: 1}", "echo once; sleep 600")
    _up(cli, name, folder)
    # In the foreground: dlvm follows the job's log over SSH on every node. Silent for longer
    # than hang_timeout_minutes, the job is not running, and watching it keeps nothing up.
    with cli.background("launch", str(spec)):
        wait_until(lambda: powered_off(name), 30 * MINUTE, interval=0.5, message="still running")
    assert _node_states(cli, name) == [("stopped", "autostop")] * 2


def test_max_hours_stops_a_busy_cluster(cli: Cli, cluster: tuple[str, Path]) -> None:
    name, folder = cluster
    spec = _spec(
        folder, name, "{idle_minutes: null, max_hours: 1}", "while true; do echo t; sleep 0.5; done"
    )
    # max_hours: 1 as 6 s here (the 10-minute warning as 1 s before it).
    os.environ["DLVM_AUTOSTOP_MINUTE_SECONDS"] = "0.1"
    try:
        _up(cli, name, folder)
        started = cli.run("launch", str(spec), "--detach", check=True)
    finally:
        os.environ["DLVM_AUTOSTOP_MINUTE_SECONDS"] = str(MINUTE)
    job_id = re.search(r"job (\S+) started", started.stdout)
    assert job_id
    wait_until(lambda: powered_off(name), 120, interval=0.5, message="still running")
    assert _node_states(cli, name) == [("stopped", "max_hours")] * 2
    # The job's supervisor ends the job with its nodes instead of replacing them.
    job = wait_until(
        lambda: next(
            (
                j
                for j in cli.status(name)["jobs"]
                if j["id"] == job_id[1] and j["state"] != "running"
            ),
            None,
        ),
        60,
        interval=0.5,
        message="the job still counts as running",
    )
    assert job["state"] == "cancelled"
    assert any("powered off by max_hours" in e["text"] for e in job["events"])
    assert job["recoveries"] == 0
    log = (head_files(cli, name) / "jobs" / job_id.group(1) / "log").read_text()
    assert "dlvm autostop: max_hours reached" in log


def test_a_node_answering_the_probe_oddly_cannot_stop_max_hours(
    cli: Cli, cluster: tuple[str, Path]
) -> None:
    """node-1's watcher program replaced (by its setup, after `up` copied the real one) with
    one that answers the probe `{"jobs": 1}`: the head's watcher crashed on it in every round,
    before max_hours was looked at, and was started again for ever."""
    name, folder = cluster
    hostile = (
        'if [ "$DLVM_NODE_RANK" = 1 ]; then '
        "printf '%s\\n' 'import json; print(json.dumps({\"jobs\": 1}))' "
        f"> ~/.dlvm/node-files/{name}/autostop/watcher.py; fi\n"
    )
    spec = _spec(
        folder,
        name,
        "{idle_minutes: 50, max_hours: 1}",
        "while true; do echo t; sleep 0.5; done",
        setup=SETUP + "  " + hostile,
    )
    os.environ["DLVM_AUTOSTOP_MINUTE_SECONDS"] = "0.5"  # max_hours: 1 as 30 s
    try:
        _up(cli, name, folder)
        cli.run("launch", str(spec), "--detach", check=True)
    finally:
        os.environ["DLVM_AUTOSTOP_MINUTE_SECONDS"] = str(MINUTE)
    beat = head_files(cli, name) / "autostop" / "heartbeat.json"

    def odd_answer_counted() -> bool:
        try:
            return "no answer from node-1" in json.loads(beat.read_text())["busy"]
        except (OSError, ValueError, KeyError, TypeError):
            return False

    if not powered_off(name):  # seen before max_hours, unless this machine is very slow
        wait_until(lambda: odd_answer_counted() or powered_off(name), 60, interval=0.5)
    wait_until(lambda: powered_off(name), 120, interval=0.5, message="max_hours never applied")
    assert _node_states(cli, name) == [("stopped", "max_hours")] * 2
    log = (head_files(cli, name) / "autostop" / "watcher.log").read_text()
    assert "Traceback" not in log


def test_action_down_is_finished_by_the_next_status(cli: Cli, cluster: tuple[str, Path]) -> None:
    name, folder = cluster
    _spec(folder, name, "{idle_minutes: 1}")
    _up(cli, name, folder)
    cli.run("autostop", name, "--idle", "1", "--action", "down", check=True)
    wait_until(lambda: powered_off(name), 20 * MINUTE, interval=0.5, message="still running")
    # Taken down is not stopped: start refuses (gcp VMs that deleted themselves cannot start).
    refused = cli.run("start", name)
    assert refused.returncode == 2 and "was taken down by autostop" in refused.stderr
    status = cli.status(name)
    # The nodes could not delete themselves: this status did, and says who took it down when.
    assert str(status["taken_down"]).startswith("autostop at ")
    assert namespaces(name) == []
    assert cli.run("status", name).returncode != 0  # no such cluster any more
