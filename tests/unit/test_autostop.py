"""The autostop watcher's own decisions (nodeside/watcher.py, run as a plain program on the
nodes) and the settings orchestrate gives it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dlvm_cluster.errors import UsageError
from dlvm_cluster.inventory import Inventory, Node
from dlvm_cluster.nodeside import watcher
from dlvm_cluster.orchestrate.cluster.autostop import (
    changed_settings,
    describe,
    read_heartbeat,
    watcher_config,
)
from dlvm_cluster.progress import SilentProgress
from dlvm_cluster.providers import local, spec_kinds
from dlvm_cluster.providers.ssh import ExistingHosts
from dlvm_cluster.spec.model import Autostop
from dlvm_cluster.state import ClusterState

NODES = tuple(Node(f"node-{r}", r, f"10.0.0.{r + 1}", 22, "root", "") for r in range(2))
INVENTORY = Inventory("c", NODES)


def _job(root: Path, name: str, pid: int, *, quiet_for: float = 0.0, ended: bool = False) -> None:
    job = root / "jobs" / name
    job.mkdir(parents=True)
    (job / "pid").write_text(f"{pid}\n")
    (job / "log").write_text("step\n")
    if quiet_for:
        then = time.time() - quiet_for
        os.utime(job / "log", (then, then))
    if ended:
        (job / "exit").write_text("0\n")


def test_a_job_is_running_while_it_prints_and_hung_once_silent(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    _job(tmp_path, "printing", os.getpid())
    _job(tmp_path, "silent", os.getpid(), quiet_for=120)
    _job(tmp_path, "ended", os.getpid(), ended=True)
    _job(tmp_path, "killed", dead.pid)
    progressing, hung = watcher.running_jobs(str(tmp_path), 60, time.time())
    assert (progressing, hung) == (["printing"], ["silent"])
    # Without a hang timeout, a silent job still runs.
    assert watcher.running_jobs(str(tmp_path), None, time.time()) == (["printing", "silent"], [])


def test_the_probe_is_one_json_line_from_a_plain_python(tmp_path: Path) -> None:
    _job(tmp_path, "j1", os.getpid())
    done = subprocess.run(
        [sys.executable, "-S", "-I", watcher.__file__, "probe", str(tmp_path), "60"],
        capture_output=True,
        text=True,
        check=True,
    )
    report = __import__("json").loads(done.stdout)
    assert report["jobs"] == ["j1"] and report["hung"] == [] and "sessions" in report


def test_a_warning_is_appended_to_running_jobs_only(tmp_path: Path) -> None:
    _job(tmp_path, "running", os.getpid())
    _job(tmp_path, "ended", os.getpid(), ended=True)
    watcher.warn_jobs(str(tmp_path), "max_hours soon")
    assert (tmp_path / "jobs/running/log").read_text() == "step\nmax_hours soon\n"
    assert (tmp_path / "jobs/ended/log").read_text() == "step\n"


def test_minutes_become_seconds_and_the_head_asks_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = spec_kinds().parse(
        {
            "name": "c",
            "provider": {"kind": "local"},
            "nodes": {"count": 2},
            "job": {"framework": "none", "command": "x", "hang_timeout_minutes": 5},
        }
    )
    settings = Autostop(idle_minutes=2, action="down", max_hours=3)
    config = watcher_config(spec, settings, INVENTORY, "poweroff", 100.0)
    assert (config["idle_seconds"], config["max_seconds"], config["hang_seconds"]) == (
        120,
        3 * 3600,
        300,
    )
    assert config["peers"] == ["node-1"] and config["action"] == "down"
    monkeypatch.setenv("DLVM_AUTOSTOP_MINUTE_SECONDS", "2")
    config = watcher_config(spec, settings, INVENTORY, "poweroff", 100.0)
    assert (config["idle_seconds"], config["max_seconds"], config["hang_seconds"]) == (4, 360, 10)


def test_dlvm_autostop_changes_only_what_it_is_given() -> None:
    current = Autostop(idle_minutes=30, action="stop", max_hours=72)
    assert changed_settings(current, idle=5, off=False, action=None) == Autostop(
        idle_minutes=5, action="stop", max_hours=72
    )
    assert changed_settings(current, idle=None, off=False, action="down").action == "down"
    assert changed_settings(current, idle=None, off=True, action=None) is None
    with pytest.raises(UsageError):
        changed_settings(current, idle=5, off=True, action=None)
    assert describe(current) == "idle 30 min -> stop, max 72 h -> stop"


def test_machines_dlvm_does_not_own_are_never_powered_off(tmp_path: Path) -> None:
    state = ClusterState("c", tmp_path)
    hosts = ExistingHosts(state)
    with pytest.raises(UsageError) as refused:
        hosts.stop_nodes(INVENTORY, SilentProgress(), by="user")
    assert "does not own them" in refused.value.message
    with pytest.raises(UsageError):
        hosts.start_nodes(INVENTORY, SilentProgress())
    assert hosts.self_stop_command("stop") is None


def test_a_session_following_a_hung_job_is_told_by_its_job_folder() -> None:
    from dlvm_cluster.inventory import node_dir
    from dlvm_cluster.remote import jobcontrol

    assert watcher.following(node_dir("c"), "j1") in jobcontrol.follow("c", "j1")
    assert watcher.following(node_dir("c"), "j1") not in jobcontrol.follow("c", "j2")


def test_a_node_that_does_not_answer_the_probe_keeps_the_cluster_up(tmp_path: Path) -> None:
    """A node too loaded (or too briefly unreachable) to answer may be training: unknown is
    not idle, or one SSH hiccup would stop a busy cluster."""
    config = {"node_dir": str(tmp_path), "hang_seconds": None, "peers": ["nowhere.invalid"]}
    assert watcher.activity(config) == ["no answer from nowhere.invalid"]


def _self_stop_in_a_sandbox(recorded: str) -> subprocess.CompletedProcess[str]:
    """The local self-stop run in a fresh network and mount namespace whose node dir records
    `recorded` as the node's namespace (`self`: the sandbox's own): whatever it decides, it
    can only kill the sandbox."""
    record = "readlink /proc/self/ns/net" if recorded == "self" else f"echo '{recorded}'"
    sandbox = (
        "mount -t tmpfs tmpfs /run && mkdir -p /run/dlvm/node && "
        f'{record} > /run/dlvm/node/netns && exec sh -c "$SELF_STOP"'
    )
    return subprocess.run(
        ["unshare", "--net", "--mount", "--propagation", "private", "sh", "-c", sandbox],
        env={**os.environ, "SELF_STOP": local.SELF_STOP},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_local_self_stop_runs_only_in_the_namespace_recorded_for_its_node() -> None:
    """Local nodes share the host's PIDs: a self-stop anywhere but in its node's namespace
    (the host's, say) must kill nothing. PID 1's namespace is no reference: in a container
    it can be unreadable, and the empty answer passed for `not the host`."""
    refused = (1, "refusing: not the namespace this node was booted in")
    host = os.readlink("/proc/self/ns/net")
    for recorded in (host, ""):
        done = _self_stop_in_a_sandbox(recorded)
        assert (done.returncode, done.stderr.strip()) == refused
    assert _self_stop_in_a_sandbox("self").returncode == -9  # it ended its namespace, itself too


@pytest.mark.parametrize(
    "written",
    [
        "by=\x1b]52;c;ZWNobyBoaQ==\x07 at=1700000000",  # a terminal escape for status
        "by=[link=file:///etc]user[/link] at=1700000000",  # rich markup in status' table
        "by=autostop at=1e300 action=down",  # no clock shows it: a crash in status
        "by=autostop at=nan",
        "by=autostop at=1700000000 action=rm",
    ],
)
def test_a_local_nodes_stop_record_is_taken_only_in_dlvms_own_words(
    tmp_path: Path, written: str
) -> None:
    """The node writes its `stopped` file, and root there may write anything."""
    (tmp_path / "stopped").write_text(written + "\n")
    assert local._stop_mark(tmp_path / "stopped") is None


def test_a_local_nodes_autostop_record_is_read(tmp_path: Path) -> None:
    (tmp_path / "stopped").write_text("by=max_hours at=1700000000 action=down\n")
    mark = local._stop_mark(tmp_path / "stopped")
    assert mark is not None and (mark.by, mark.at, mark.action) == ("max_hours", 1.7e9, "down")


def test_a_fresh_heartbeat_is_an_active_watcher() -> None:
    beat = '{"at": 995, "interval": 30, "idle_for": 12.5, "busy": ["job j1 on head"]}'
    state = read_heartbeat(f"1000\n{beat}\n", "node-0")
    assert (state.active, state.idle_for, state.busy) == (True, 12.5, ("job j1 on head",))
    assert "last reported 905s ago" in read_heartbeat('1000\n{"at": 95}', "node-0").problem


@pytest.mark.parametrize(
    "beat",
    [
        "[]",
        '{"at": "soon"}',
        '{"at": null}',
        '{"busy": 3}',
        "7",
        "[" * 200_000 + "]" * 200_000,  # RecursionError in json.loads
        '{"at": 995, "interval": 1e308}',  # would keep a dead watcher fresh for ever
        '{"at": -1e300, "interval": 1e300}',
        '{"at": 1e12}',  # from the future
        '{"at": 995, "idle_for": NaN}',
        '{"at": 995, "busy": [["x"]]}',
        '{"at": 995, "interval": true}',
    ],
)
def test_a_heartbeat_of_any_other_shape_is_unreadable_not_a_crash(beat: str) -> None:
    """status reads the head's file: a broken or hostile head must not crash it."""
    state = read_heartbeat(f"1000\n{beat}\n", "node-0")
    assert not state.active and "unreadable heartbeat" in state.problem


def test_a_watcher_that_restarts_without_completing_a_round_is_told_apart() -> None:
    restarting = '{"at": 400, "started": 998, "starts": 12, "interval": 30}'
    state = read_heartbeat(f"1000\n{restarting}\n", "node-0")
    assert not state.active
    assert (
        "keeps restarting without completing a round (12 starts since its last round 600s ago"
        in (state.problem)
    )
    starting = '{"at": null, "started": 990, "starts": 1, "interval": 30}'
    assert read_heartbeat(f"1000\n{starting}\n", "node-0").active
    never = '{"at": null, "started": 100, "starts": 1, "interval": 30}'
    assert "completed no round" in read_heartbeat(f"1000\n{never}\n", "node-0").problem


def test_max_hours_counts_from_this_machines_boot_when_that_came_later() -> None:
    """A VM stopped by max_hours and started again boots its watcher (a systemd service)
    with the old config: counting from the old start, it would stop the VM again at once."""
    booted = watcher.boot_time()
    assert 0 < booted <= time.time()
    assert watcher.up_since({"started_at": booted - 72 * 3600}, time.time()) == booted
    assert watcher.up_since({"started_at": booted + 5}, time.time()) == booted + 5


@pytest.mark.parametrize(
    "config",
    ["[" * 200_000, '{"started_at": "soon"}', '{"started_at": 1e308}', "{}", '{"started_at": -5}'],
)
def test_a_head_config_of_any_shape_is_no_start_time_not_a_crash(config: str) -> None:
    """`up`, `start`, `scale` and `autostop` read when the nodes started from the head's
    config.json: a broken or hostile head must not crash them."""
    from dlvm_cluster.orchestrate.cluster.autostop import _started_at

    class Answers:
        def get(self, node: Node) -> Answers:
            return self

        def run(self, command: str) -> tuple[int, str, str]:
            return 0, config, ""

    assert _started_at(Answers(), INVENTORY.head, "c") is None  # type: ignore[arg-type]


def test_the_head_configs_start_time_is_kept() -> None:
    from dlvm_cluster.orchestrate.cluster.autostop import _started_at

    class Answers:
        def get(self, node: Node) -> Answers:
            return self

        def run(self, command: str) -> tuple[int, str, str]:
            return 0, '{"started_at": 1700000000.5}', ""

    assert _started_at(Answers(), INVENTORY.head, "c") == 1700000000.5  # type: ignore[arg-type]


def test_dlvm_autostop_refuses_stop_for_flex_start_vms_with_the_reason() -> None:
    """The cluster file refuses `action: stop` with flex-start at load; `dlvm autostop
    --action stop` on such a running cluster is refused the same way, before the head's
    watcher is told."""
    from dlvm_cluster.providers import load_spec_text

    text = (
        "name: flex\nprovider:\n  kind: gcp\n  project: p-123456\n  region: us-central1\n"
        "  zones: [us-central1-a]\n  allowed_ssh_cidrs: [203.0.113.7/32]\n"
        "nodes:\n  count: 2\n  machine_type: a3-highgpu-8g\n  provisioning: flex-start\n"
        "  max_run_hours: 8\nautostop:\n  idle_minutes: 30\n  action: down\n"
    )
    spec = load_spec_text(text, Path("/nowhere/flex.yaml")).spec
    current = spec.autostop
    with pytest.raises(UsageError) as refused:
        changed_settings(current, idle=None, off=False, action="stop", spec=spec)
    assert "flex-start VMs cannot be stopped" in refused.value.message
    assert "'flex'" in refused.value.message
    # What the file allows stays allowed.
    kept = changed_settings(current, idle=10, off=False, action=None, spec=spec)
    assert kept is not None and kept.action == "down" and kept.idle_minutes == 10
    assert changed_settings(current, idle=None, off=True, action=None, spec=spec) is None
