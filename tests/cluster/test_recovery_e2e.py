"""Recovery on a real local cluster: a node vanishing mid-training (every process of its
network namespace killed, as a VM that disappears) is replaced alone and training resumes
from its checkpoint, also when EC2 says the node's Spot instance was taken back (its state
read through the aws provider from moto); a failing rank fails fast or is restarted as the
file says; a hung job is caught by the hang timeout; a detached job is recovered by its
supervisor with no dlvm command running, and `cancel` during a recovery leaves nothing."""

from __future__ import annotations

import dataclasses
import fcntl
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aws_moto import interrupt_spot, moto_clients, run_node
from harness import REPO, Cli, unique_name, wait_until
from system import alive, processes_mentioning, sleep_marker, wait_for_processes

from dlvm_cluster.inventory import Inventory, Node
from dlvm_cluster.orchestrate.cluster.context import Cluster
from dlvm_cluster.orchestrate.jobs.verbs import launch
from dlvm_cluster.progress import SilentProgress
from dlvm_cluster.providers import load_spec
from dlvm_cluster.providers.aws import power as aws_power
from dlvm_cluster.providers.aws.api import AwsClients
from dlvm_cluster.providers.aws.instances import Instance, cluster_instances
from dlvm_cluster.providers.base import CAPACITY_ENDS_ENV, Converge, NodeState, StopMark
from dlvm_cluster.providers.local import NamespaceNodes
from dlvm_cluster.spec.model import ClusterSpec
from dlvm_cluster.state import ClusterState


@pytest.fixture(scope="module")
def cluster(cli: Cli, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    name = unique_name("rc")
    folder = tmp_path_factory.mktemp("recovery")
    try:
        cli.run("up", str(_spec(folder, name, "framework: none\n  command: hostname")), check=True)
        yield name, folder
    finally:
        cli.run("down", name, "--yes")
        shutil.rmtree(cli.home / "storage" / _bucket(name), ignore_errors=True)
        shutil.rmtree(_mount(name), ignore_errors=True)  # the empty mount point on the host


def _bucket(name: str) -> str:
    return f"dlvm-test-{name}"


def _mount(name: str) -> Path:
    return Path("/mnt") / name


def _spec(folder: Path, name: str, job: str) -> Path:
    """The test cluster: 2 nodes, checkpoints on shared storage (DLVM_CHECKPOINT_DIR)."""
    path = folder / f"{name}-{abs(hash(job)) % 10**8}.yaml"
    path.write_text(
        f"name: {name}\n"
        "provider: {kind: local}\n"
        "nodes: {count: 2}\n"
        "env: {OMP_NUM_THREADS: 1, PG_TIMEOUT: 30}\n"
        f"storage: [{{mount: {_mount(name)}, bucket: gs://{_bucket(name)}/ckpt}}]\n"
        "files:\n"
        f"  - {{src: {REPO / 'examples' / 'train_ddp.py'}, dst: ~/work}}\n"
        f"job:\n  workdir: ~/work\n  {job}\n"
    )
    return path


def _nodes(cli: Cli, name: str) -> dict[str, dict[str, Any]]:
    return {node["name"]: node for node in cli.status(name)["nodes"]}  # type: ignore[attr-defined]


def _job(cli: Cli, name: str) -> dict[str, Any]:
    job: dict[str, Any] = cli.status(name)["jobs"][-1]  # type: ignore[index]
    return job


def _host_keys(cli: Cli, name: str) -> dict[str, str]:
    inventory = cli.home / "clusters" / name / "inventory.json"
    import json

    return {node["name"]: node["host_key"] for node in json.loads(inventory.read_text())["nodes"]}


def _vanish(cli: Cli, name: str, node: str, first: Callable[[], None] = lambda: None) -> None:
    """Kill every process of the node's network namespace: its init, sshd and the job
    (right after `first`, once they are known)."""
    namespace = _nodes(cli, name)[node]["provider_id"]
    pids = subprocess.run(
        ["ip", "netns", "pids", namespace], capture_output=True, text=True, check=True
    ).stdout.split()
    assert pids, f"no process in {namespace}"
    first()
    subprocess.run(["kill", "-KILL", *pids], check=False)


class Output:
    """A background command's stdout, read as it comes."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert process.stdout is not None
        stream = process.stdout
        self._reader = threading.Thread(target=lambda: self.lines.extend(stream), daemon=True)
        self._reader.start()

    def has(self, pattern: str) -> bool:
        return any(re.search(pattern, line) for line in list(self.lines))

    def text(self) -> str:
        self._reader.join(timeout=10)
        return "".join(self.lines)


def _events(job: dict[str, Any]) -> list[str]:
    return [event["text"] for event in job["events"]]


@pytest.mark.training
def test_a_vanished_node_is_replaced_alone_and_training_resumes(
    cli: Cli, cluster: tuple[str, Path]
) -> None:
    """The head vanishes: rank 0 and its disk with it. Training resumes from the checkpoint
    it left on shared storage, on a fresh head, at full world size."""
    name, folder = cluster
    cli.run("exec", name, "--nodes", "1", "echo kept > /tmp/survivor", check=True)
    before, keys = _nodes(cli, name), _host_keys(cli, name)
    spec = _spec(
        folder,
        name,
        "framework: torchrun\n  command: train_ddp.py --steps 160 --step-time 0.05",
    )
    with cli.background("launch", str(spec)) as process:
        output = Output(process)
        wait_until(lambda: output.has(r"step 40 loss"), 240, message=output.text)
        _vanish(cli, name, "node-0")
        process.wait(timeout=400)
        stderr = process.stderr.read() if process.stderr else ""
        assert process.returncode == 0, stderr[-3000:]
    stdout = output.text()
    resumed = re.search(rf"resumed from {_mount(name)}/model.pt at step (\d+)", stdout)
    assert resumed and int(resumed.group(1)) >= 40, stdout[-3000:]
    assert re.search(r"done steps=160 world_size=2", stdout)
    assert (cli.home / "storage" / _bucket(name) / "ckpt" / "model.pt").exists()
    job = _job(cli, name)
    assert (job["state"], job["recoveries"], job["restarts"]) == ("succeeded", 1, 1)
    events = _events(job)
    assert events[0].startswith("failure: "), events
    assert events[1] == "job stopped on 1 node(s); not reached: node-0"
    # Its processes gone, the local provider sees the node powered off, with no mark of a
    # `dlvm stop` or autostop: lost, whichever look (provider or SSH) saw it first.
    assert {"node lost: node-0 (stopped)", "node lost: node-0 (unreachable over SSH)"} & set(events)
    assert any(e.startswith("node replaced: node-0 ") for e in events)
    assert events[-2:] == [
        "restart 1: relaunched on 2 node(s)",
        "resumed: output again after restart 1",
    ]
    for line in ("node lost: node-0", "node replaced: node-0", "setup done on node-0"):
        assert line in stderr
    after, new_keys = _nodes(cli, name), _host_keys(cli, name)
    assert after["node-1"]["provider_id"] == before["node-1"]["provider_id"]
    assert new_keys["node-1"] == keys["node-1"] and new_keys["node-0"] != keys["node-0"]
    kept = cli.run("exec", name, "--nodes", "1", "cat /tmp/survivor", check=True)
    assert "kept" in kept.stdout
    logs = cli.run("logs", name, job["id"], check=True)
    assert "node replaced: node-0" in logs.stderr


def test_a_failing_rank_fails_fast_with_its_last_lines(cli: Cli, cluster: tuple[str, Path]) -> None:
    name, folder = cluster
    marker = sleep_marker(631)
    spec = _spec(
        folder,
        name,
        "framework: none\n  command: "
        f"'[ $DLVM_NODE_RANK = 1 ] && echo rank1-broke && exit 4; {marker}'",
    )
    result = cli.run("launch", str(spec), timeout=120)
    assert result.returncode == 1
    assert "failed on node-1 (exit 4)" in result.stderr and "rank1-broke" in result.stderr
    assert processes_mentioning(marker) == []
    job = _job(cli, name)
    assert (job["state"], job["restarts"], job["recoveries"]) == ("failed", 0, 0)


def test_a_rank_error_is_restarted_up_to_max_restarts_on_error(
    cli: Cli, cluster: tuple[str, Path]
) -> None:
    name, folder = cluster
    cli.run("exec", name, "rm -f /tmp/failed-once", check=True)
    spec = _spec(
        folder,
        name,
        "framework: none\n  max_restarts_on_error: 1\n  command: "
        "'[ -f /tmp/failed-once ] || { touch /tmp/failed-once; "
        "[ $DLVM_NODE_RANK = 1 ] && exit 5; sleep 30; }; echo finished-run'",
    )
    result = cli.run("launch", str(spec), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[node-1] finished-run" in result.stdout
    job = _job(cli, name)
    assert (job["state"], job["restarts"], job["recoveries"]) == ("succeeded", 1, 0)
    assert "restart 1: relaunched on 2 node(s)" in _events(job)


def test_a_hung_job_is_caught_by_the_hang_timeout(cli: Cli, cluster: tuple[str, Path]) -> None:
    name, folder = cluster
    marker = sleep_marker(632)
    spec = _spec(folder, name, f"framework: none\n  command: 'echo waiting; {marker}'")
    # The timeout in seconds (the cluster file says minutes): the override meant for tests.
    with cli.background("launch", str(spec), DLVM_HANG_TIMEOUT_SECONDS="3") as process:
        _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1
    assert "no output from any rank for 3s" in stderr
    assert processes_mentioning(marker) == []
    assert _job(cli, name)["state"] == "failed"


@pytest.mark.training
def test_an_elastic_job_runs_on_while_its_lost_node_is_replaced_and_joins(
    cli: Cli, cluster: tuple[str, Path]
) -> None:
    name, folder = cluster
    cli.run("exec", name, f"rm -f {_mount(name)}/model.pt", check=True)
    spec = _spec(
        folder,
        name,
        "framework: torchrun\n  command: train_ddp.py --steps 120 --step-time 0.05\n"
        '  nnodes: "1:2"',
    )
    with cli.background("launch", str(spec)) as process:
        output = Output(process)
        wait_until(lambda: output.has(r"step 40 loss"), 240, message=output.text)
        _vanish(cli, name, "node-1")
        process.wait(timeout=400)
        stderr = process.stderr.read() if process.stderr else ""
        assert process.returncode == 0, stderr[-3000:]
    stdout = output.text()
    # node-0's launcher was never stopped: torchrun itself restarted its workers
    assert re.search(r"\[node-0\] world_size=\d rank=0 restart=1", stdout), stdout[-3000:]
    assert re.search(r"done steps=120 world_size=2", stdout)
    job = _job(cli, name)
    assert (job["state"], job["recoveries"], job["restarts"]) == ("succeeded", 1, 0)
    events = _events(job)
    assert {
        f"node lost: node-1 ({why}); the job runs on without it"
        for why in ("stopped", "unreachable over SSH")
    } & set(events)
    assert "node-1 joined the running job" in events
    assert not any(e.startswith("job stopped") for e in events), events


class SpotNodes(NamespaceNodes):
    """The local nodes as EC2 Spot instances: each node has an instance (moto's), tagged as
    terraform/aws tags a node's, and the node's state comes from EC2 through the aws
    provider's own reading (`cluster_instances`, `Instance.node_state`, the autostop marks);
    a replaced node gets a new namespace and a new Spot instance."""

    def __init__(self, state: ClusterState, spec: ClusterSpec, clients: AwsClients) -> None:
        super().__init__(state, spec)
        self.clients = clients

    def _instances(self, inventory: Inventory) -> dict[str, Instance]:
        names = [node.name for node in inventory.nodes]
        return cluster_instances(self.clients, inventory.cluster, names)

    def node_states(self, inventory: Inventory) -> dict[str, NodeState]:
        return {name: found.node_state for name, found in self._instances(inventory).items()}

    def stop_marks(self, inventory: Inventory) -> dict[str, StopMark]:
        return aws_power.self_stop_marks(self._instances(inventory))

    def replace_nodes(self, request: Converge, names: list[str]) -> Inventory:
        inventory = super().replace_nodes(request, names)
        for node in names:
            run_node(self.clients, inventory.cluster, node, spot=True)
        return inventory


class Lines(SilentProgress):
    """The nodes' output lines a run shows, as `[node] text`."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def line(self, node: Node, stream: str, text: str) -> None:
        self.lines.append(f"[{node.name}] {text}")

    def has(self, pattern: str) -> bool:
        return any(re.search(pattern, line) for line in list(self.lines))


SPOT_STEPS = 200


def test_a_spot_interruption_seen_in_ec2_replaces_that_node_alone_and_resumes(
    cli: Cli, cluster: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """EC2 takes node-1's Spot instance back mid-job (terminated, state reason
    Server.SpotInstanceTermination) and the machine goes with it: the supervisor reads
    `preempted` from EC2, replaces node-1 alone (node-0 keeps its machine and key) and the
    job resumes from its checkpoint. The nodes' environment also says when their capacity
    ends (as a Capacity Block's cluster does): the running job is warned of it."""
    name, folder = cluster
    ckpt = "$DLVM_CHECKPOINT_DIR/spot-$DLVM_NODE_RANK"
    cli.run("exec", name, f"rm -f {ckpt}", check=True)
    spec = _spec(
        folder,
        name,
        f"framework: none\n  command: 'n=$(cat {ckpt} 2>/dev/null || echo 0); "
        "[ $n -gt 0 ] && echo resumed at $n; "
        f"while [ $n -lt {SPOT_STEPS} ]; do n=$((n+1)); echo $n > {ckpt}; echo step $n; "
        "sleep 0.25; done; echo finished'",
    )
    monkeypatch.setenv("DLVM_HOME", str(cli.home))
    before = _host_keys(cli, name)
    with moto_clients(monkeypatch) as clients:
        spot = {node: run_node(clients, name, node, spot=True) for node in before}
        state = ClusterState.for_name(name)
        cluster_ = Cluster(state, provider=SpotNodes(state, load_spec(spec).spec, clients))
        inventory = cluster_.require_inventory()
        ends = datetime.now(UTC) + timedelta(minutes=20)
        cluster_.save_inventory(
            dataclasses.replace(
                inventory, env={**inventory.env, CAPACITY_ENDS_ENV: ends.isoformat()}
            )
        )
        progress, outcome = Lines(), {}

        def supervised() -> None:
            try:
                outcome["record"] = launch(cluster_, progress, loaded=load_spec(spec))
            except BaseException as exc:  # shown by the assertion below
                outcome["error"] = exc

        run = threading.Thread(target=supervised, daemon=True)
        run.start()
        try:
            wait_until(lambda: progress.has(r"\[node-1\] step 5$"), 120, message=progress.lines)
            # EC2 says so as the machine goes: whichever look sees the loss, it is preempted.
            _vanish(cli, name, "node-1", lambda: interrupt_spot(clients, spot["node-1"]))
            run.join(timeout=400)
        finally:
            if run.is_alive():
                for record in cluster_.jobs.all():
                    cluster_.jobs.request_cancel(record.id)
                run.join(timeout=120)
            cluster_.close()
            for record in cluster_.jobs.all():  # supervised by this process, which stays
                cluster_.jobs.update(record.id, lambda stored: setattr(stored, "supervisor", ""))
        assert "error" not in outcome, f"{outcome.get('error')!r} {progress.lines[-20:]}"
        record = outcome["record"]
        found = cluster_instances(clients, name, list(before))
    events = [str(event["text"]) for event in record.events]
    assert (record.state, record.recoveries, record.restarts) == ("succeeded", 1, 1), events
    assert events[0].startswith("the capacity under the nodes ends at "), events
    assert "node lost: node-1 (preempted)" in events
    assert any(e.startswith("node replaced: node-1 ") for e in events)
    assert not any("node-0" in e for e in events if e.startswith(("node lost", "node replaced")))
    after = _host_keys(cli, name)
    assert after["node-0"] == before["node-0"] and after["node-1"] != before["node-1"]
    resumed = [line for line in progress.lines if line.startswith("[node-1] resumed at ")]
    assert resumed and int(resumed[0].split()[-1]) >= 5, progress.lines[-20:]
    assert {"[node-0] finished", "[node-1] finished"} <= set(progress.lines)
    # EC2: node-1 runs on its new Spot instance; node-0 on the one it had.
    assert found["node-0"].instance_id == spot["node-0"]
    assert found["node-1"].instance_id != spot["node-1"] and found["node-1"].state == "running"


def test_detached_recovery_then_cancel_during_a_recovery(
    cli: Cli, cluster: tuple[str, Path]
) -> None:
    """Last in the module: it leaves node-1 lost (the next `up` would recreate it)."""
    name, folder = cluster
    marker = sleep_marker(633)
    spec = _spec(folder, name, f"framework: none\n  command: 'echo up; {marker}'")
    started = cli.run("launch", str(spec), "--detach", check=True)
    job_id = re.search(r"job (\S+) started", started.stdout)
    assert job_id
    wait_for_processes(marker, 2)
    supervisor = int(_job(cli, name)["supervisor"].split(":")[0])
    assert alive(supervisor)

    # No dlvm command runs: the supervisor alone replaces the node and relaunches.
    _vanish(cli, name, "node-1")
    wait_until(
        lambda: _job(cli, name)["recoveries"] == 1 and _job(cli, name)["state"] == "running",
        120,
        interval=1,
        message=lambda: str(_events(_job(cli, name))),
    )
    wait_for_processes(marker, 2)

    # A second loss while the cluster is busy (its lock held, as by another `up`): the
    # replacement fails and is retried; cancel stops it there.
    lock = os.open(cli.home / "clusters" / name / "lock", os.O_RDWR)
    fcntl.flock(lock, fcntl.LOCK_EX)  # held by this process alone: released on close
    try:
        _vanish(cli, name, "node-1")
        wait_until(
            lambda: any("failed (try 1)" in e for e in _events(_job(cli, name))),
            60,
            interval=1,
            message=lambda: str(_events(_job(cli, name))),
        )
        assert _job(cli, name)["state"] == "recovering"
        cancelled = cli.run("cancel", name, job_id.group(1))
    finally:
        os.close(lock)
    assert not alive(supervisor)
    assert processes_mentioning(marker) == []
    job = _job(cli, name)
    assert job["state"] == "cancelled" and job["recoveries"] == 1
    # node-1 is gone, so cancel says it could not check there; everywhere else nothing is left
    assert "node-1" in cancelled.stderr
