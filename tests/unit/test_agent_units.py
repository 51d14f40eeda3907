"""The agent's protocol against a real agent process whose only node cannot be reached: no
cluster and no root needed. Warm connections on real nodes: test_agent_e2e.py."""

from __future__ import annotations

import json
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import HOST_KEY, REPO, start_agent, unreachable_cluster
from system import wait_gone

from dlvm_cluster.inventory import Inventory, Node
from dlvm_cluster.orchestrate.cluster.records import save_applied
from dlvm_cluster.orchestrate.nodes.commands import _exec_env
from dlvm_cluster.providers import load_spec_text
from dlvm_cluster.remote import agent_client, agent_process
from dlvm_cluster.remote.results import CommandResult, GroupResult
from dlvm_cluster.secret_env import resolve
from dlvm_cluster.state import ClusterState


@pytest.fixture
def state(tmp_path: Path) -> ClusterState:
    return unreachable_cluster(ClusterState(name="agu", root=tmp_path / "agu"))


@pytest.fixture
def agent(state: ClusterState, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    monkeypatch.setenv("DLVM_AGENT_IDLE", "30")
    pid = start_agent(state)
    try:
        yield pid
    finally:
        agent_process.stop(state.root)


def _digest(state: ClusterState) -> str:
    return agent_client.inventory_digest(state.inventory_path.read_bytes())


def test_ping_describes_the_agent_and_the_socket_is_private(
    state: ClusterState, agent: int
) -> None:
    answer = agent_client.ping(state.root)
    assert answer is not None
    assert answer["pid"] == agent == agent_process.running_pid(state.root)
    assert answer["inventory"] == _digest(state)
    assert answer["idle_timeout"] == 30
    mode = (state.root / agent_client.SOCKET_NAME).stat().st_mode
    assert stat.S_IMODE(mode) == 0o600


def test_a_second_agent_exits_at_once(state: ClusterState, agent: int) -> None:
    second = subprocess.run(
        [sys.executable, "-m", "dlvm_cluster.agent", str(state.root)],
        cwd=REPO,
        timeout=30,
    )
    assert second.returncode == 0
    answer = agent_client.ping(state.root)
    assert answer is not None and answer["pid"] == agent


def test_requests_for_another_inventory_are_refused(state: ClusterState, agent: int) -> None:
    node = Inventory.from_json(json.loads(state.inventory_path.read_bytes())).nodes[0]
    lines: list[str] = []
    result = agent_client.run(
        state.root, "0" * 64, [node], ["true"], sink=lambda n, s, t: lines.append(t)
    )
    assert result is None and lines == []  # nothing started: the caller runs it cold


def test_an_unreachable_node_is_reported_as_over_new_connections(
    state: ClusterState, agent: int, tmp_path: Path
) -> None:
    node = Inventory.from_json(json.loads(state.inventory_path.read_bytes())).nodes[0]
    result = agent_client.run(
        state.root,
        _digest(state),
        [node],
        ["true"],
        sink=lambda *a: None,
        make_log_dir=lambda: tmp_path / "l",
    )
    assert result is not None
    (only,) = result.results
    assert only.node == "node-0" and only.exit_code is None
    assert only.error.startswith("unreachable: node-0 (127.0.0.1:")
    assert (tmp_path / "l" / "node-0.log").read_text() == ""
    answer = agent_client.ping(state.root)
    assert answer is not None and answer["served"] == 1


def test_nothing_runs_for_a_client_that_gave_up_before_go(state: ClusterState, agent: int) -> None:
    request = {
        "op": "run",
        "inventory": _digest(state),
        "nodes": ["node-0"],
        "commands": ["true"],
        "timeout": None,
        "fail_fast": False,
    }
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(state.root / agent_client.SOCKET_NAME))
        sock.sendall(agent_client.encode(request))
        answer = agent_client.Messages(sock).next()
        assert answer is not None and answer["accepted"] == agent
    time.sleep(0.5)
    answer = agent_client.ping(state.root)
    assert answer is not None and answer["served"] == 0 and answer["running"] == 0


def test_stop_and_inventory_removal_end_the_agent(state: ClusterState, agent: int) -> None:
    assert agent_process.stop(state.root)
    assert wait_gone(agent)
    assert agent_process.running_pid(state.root) is None
    assert not (state.root / agent_client.SOCKET_NAME).exists()
    again = start_agent(state)
    state.inventory_path.unlink()
    assert wait_gone(again)
    log = (state.root / agent_process.LOG_NAME).read_text()
    assert "exiting: asked to stop" in log and "exiting: the inventory is gone" in log


def test_lost_agent_reports_every_unfinished_node() -> None:
    nodes = [
        Node(name=f"node-{r}", rank=r, ip="10.0.0.2", port=22, user="u", host_key=HOST_KEY)
        for r in range(2)
    ]
    finished = CommandResult(node="node-0", rank=0, exit_code=3, duration=0.5)
    finished.tail.extend(["a secret", "b"])
    final = {"results": GroupResult((finished,)).to_json()}  # as the agent sends it
    result = agent_client._group_result(final, nodes, lambda line: line.replace("secret", "***"))
    first, second = result.results
    assert first.exit_code == 3 and list(first.tail) == ["a ***", "b"] and not first.ok
    assert second.exit_code is None and second.error.startswith("lost: the dlvm agent stopped")


def test_messages_survive_arbitrary_chunking() -> None:
    left, right = socket.socketpair()
    payload = b"".join(agent_client.encode({"n": i, "text": "x" * i}) for i in range(50))

    def send() -> None:
        for start in range(0, len(payload), 7):
            left.sendall(payload[start : start + 7])
        left.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=send)
    sender.start()
    with left, right:
        messages = agent_client.Messages(right)
        got = []
        while (message := messages.next()) is not None:
            got.append(message)
        sender.join()
    assert [m["n"] for m in got] == list(range(50))


@pytest.mark.parametrize(
    "env",
    [
        "env: {A: one, B: '2'}\n",
        "env: {A: one, T: {value: sekrit-value, secret: true}, P: {value: shown, secret: false}}\n",
        "env: {A: one, F: {from_env: AGU_TEST_SECRET}}\n",
        "",
    ],
)
def test_exec_env_matches_the_spec_model(
    state: ClusterState, env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGU_TEST_SECRET", "from-the-env")
    loaded = load_spec_text(
        f"name: agu\nprovider: {{kind: local}}\nnodes: {{count: 1}}\n{env}",
        state.root / "c.yaml",
    )
    save_applied(state, loaded)
    plain, secrets, values = _exec_env(state)
    assert plain == loaded.spec.plain_env()
    assert secrets == tuple(sorted(loaded.spec.secret_env()))
    assert values == resolve(loaded.spec, strict=False)
