"""Warm connections on a real local cluster: the per-cluster agent keeps one SSH connection per
node open between `dlvm exec` commands, gives the same output and exit codes as new
connections, stops every node's processes on Ctrl-C, and goes away when idle or on `down`."""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Cli, unique_name, wait_until, write_spec
from system import (
    alive,
    namespace_processes,
    processes_mentioning,
    sleep_marker,
    wait_for_processes,
    wait_gone,
)

from dlvm_cluster.remote import agent_client, agent_process

SECRET = "sekrit-" + "9f2c41d7e0"


@pytest.fixture(scope="module")
def cluster(cli: Cli, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    name = unique_name("ag")
    folder = tmp_path_factory.mktemp("agent")
    (folder / "payload").mkdir()
    for index in range(3):
        (folder / "payload" / f"file{index}.txt").write_text(f"version 1 of {index}\n")
    spec = write_spec(
        folder,
        name,
        3,
        f"env:\n  GREETING: hello\n  TOKEN: {{value: {SECRET}, secret: true}}\n"
        "files:\n  - {src: payload, dst: ~/payload}\n",
    )
    cli.run("up", str(spec), check=True)
    try:
        yield name, cli.home / "clusters" / name
    finally:
        cli.run("down", name, "--yes")


def _run(cli: Cli, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dlvm_cluster", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**cli.env(), **env},
    )


def _exec(cli: Cli, name: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return _run(cli, "exec", name, *args, **env)


def _wait_for_agent(state_dir: Path, timeout: float = 30.0) -> dict[str, Any]:
    def no_answer() -> str:
        log = state_dir / agent_process.LOG_NAME
        return f"no agent answered; its log:\n{log.read_text() if log.exists() else ''}"

    return wait_until(lambda: agent_client.ping(state_dir), timeout, message=no_answer)


def _warm(cli: Cli, name: str, state_dir: Path) -> dict[str, Any]:
    """An agent serving the cluster (a cold exec starts one)."""
    if agent_client.ping(state_dir) is None:
        assert _exec(cli, name, "--", "true").returncode == 0
    return _wait_for_agent(state_dir)


def _parents(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """node -> the PID of the sshd process that ran the command: one per SSH connection."""
    assert result.returncode == 0, result.stderr
    found = {}
    for line in result.stdout.splitlines():
        node, _, pid = line.partition("] ")
        found[node.lstrip("[")] = pid
    assert len(found) == 3, result.stdout
    return found


def _background_exec(
    cli: Cli, name: str, command: str
) -> contextlib.AbstractContextManager[subprocess.Popen[str]]:
    return cli.background("exec", name, "--", command)


def test_second_exec_reuses_the_connections(cli: Cli, cluster: tuple[str, Path]) -> None:
    name, state_dir = cluster
    assert agent_process.stop(state_dir)
    cold = _parents(_exec(cli, name, "--", "echo $PPID"))  # connects, then starts the agent
    first = _wait_for_agent(state_dir)
    warm = _parents(_exec(cli, name, "--", "echo $PPID"))
    again = _parents(_exec(cli, name, "--", "echo $PPID"))
    # The same sshd connection process on every node ran both warm commands; the cold one's
    # connection was closed after it.
    assert warm == again
    assert all(warm[node] != cold[node] for node in warm)
    after = agent_client.ping(state_dir)
    assert after is not None and after["pid"] == first["pid"]
    # Two requests per exec: this cluster has a secret, whose values the nodes hold are read
    # first (to mask them), then the command runs.
    assert after["served"] == first["served"] + 4
    # Only the user can reach the agent.
    socket_mode = (state_dir / agent_client.SOCKET_NAME).stat().st_mode
    assert stat.S_ISSOCK(socket_mode) and stat.S_IMODE(socket_mode) == 0o600
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700


def test_output_and_exit_codes_match_new_connections(cli: Cli, cluster: tuple[str, Path]) -> None:
    name, state_dir = cluster
    cases = [
        ("--", "echo out-$DLVM_NODE_RANK $GREETING $TOKEN; echo err-$DLVM_NODE_RANK >&2"),
        ("--", "echo $DLVM_NODE_RANK; printf 'no newline'; exit $DLVM_NODE_RANK"),
        ("--nodes", "0,2", "--", "hostname; false"),
        ("--timeout", "6", "--", f"[ $DLVM_NODE_RANK = 1 ] && {sleep_marker(626)}; echo quick"),
        ("--quiet", "--", "echo hidden"),
    ]
    for args in cases:
        cold = _exec(cli, name, *args, DLVM_NO_AGENT="1")
        served = _warm(cli, name, state_dir)["served"]
        warm = _exec(cli, name, *args)
        answer = agent_client.ping(state_dir)
        # the secrets the nodes hold are read first (to mask them), then the command runs
        assert answer is not None and answer["served"] == served + 2, "not served by the agent"
        assert warm.returncode == cold.returncode, args
        assert sorted(warm.stdout.splitlines()) == sorted(cold.stdout.splitlines()), args
        assert sorted(warm.stderr.splitlines()) == sorted(cold.stderr.splitlines()), args
        assert SECRET not in warm.stdout + warm.stderr
    assert processes_mentioning(sleep_marker(626)) == []
    # The client keeps each node's output under the state dir, secrets masked.
    _exec(cli, name, "--", "echo logged-$DLVM_NODE_RANK $TOKEN")
    latest = max((state_dir / "logs" / "exec").iterdir(), key=lambda p: p.stat().st_mtime)
    for rank in range(3):
        assert (latest / f"node-{rank}.log").read_text() == f"logged-{rank} ***\n"


def test_ctrl_c_stops_every_node_and_exits_130(cli: Cli, cluster: tuple[str, Path]) -> None:
    name, state_dir = cluster
    served = _warm(cli, name, state_dir)["served"]
    marker = sleep_marker(627)
    with _background_exec(cli, name, f"{marker} & {marker}; wait") as process:
        assert len(wait_for_processes(marker, 6)) >= 6
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert processes_mentioning(marker) == []
    answer = agent_client.ping(state_dir)  # the agent served it, and serves on
    assert answer is not None and answer["served"] == served + 2  # the secrets read, the command
    assert _exec(cli, name, "--", "true").returncode == 0


def test_a_killed_client_cancels_its_command(cli: Cli, cluster: tuple[str, Path]) -> None:
    name, state_dir = cluster
    _warm(cli, name, state_dir)
    marker = sleep_marker(628)
    with _background_exec(cli, name, f"{marker} & {marker}; wait") as process:
        assert len(wait_for_processes(marker, 6)) >= 6
        process.kill()
        process.communicate(timeout=30)
    wait_until(
        lambda: processes_mentioning(marker) == [],
        20,
        interval=0.2,
        message=lambda: f"left running: {processes_mentioning(marker)}",
    )


def test_stop_cancels_running_commands_and_exits(cli: Cli, cluster: tuple[str, Path]) -> None:
    name, state_dir = cluster
    pid = _warm(cli, name, state_dir)["pid"]
    marker = sleep_marker(629)
    with _background_exec(cli, name, f"{marker} & {marker}; wait") as process:
        assert len(wait_for_processes(marker, 6)) >= 6
        assert agent_process.stop(state_dir)
        _, err = process.communicate(timeout=30)
    assert not alive(pid)
    assert processes_mentioning(marker) == []
    assert process.returncode == 1 and "node-0: interrupted" in err
    assert not (state_dir / agent_client.SOCKET_NAME).exists()


def test_agent_exits_when_idle(cli: Cli, cluster: tuple[str, Path]) -> None:
    name, state_dir = cluster
    assert agent_process.stop(state_dir)
    assert _exec(cli, name, "--", "true", DLVM_AGENT_IDLE="2").returncode == 0
    answer = _wait_for_agent(state_dir)
    assert answer["idle_timeout"] == 2
    assert wait_gone(answer["pid"], 15)
    assert not (state_dir / agent_client.SOCKET_NAME).exists()
    assert "exiting: idle for 2s" in (state_dir / agent_process.LOG_NAME).read_text()


def test_agent_exits_when_the_inventory_changes(cli: Cli, cluster: tuple[str, Path]) -> None:
    name, state_dir = cluster
    pid = _warm(cli, name, state_dir)["pid"]
    inventory = state_dir / "inventory.json"
    original = inventory.read_text()
    try:
        inventory.write_text(json.dumps(json.loads(original)))  # same nodes, other bytes
        assert wait_gone(pid, 15)
        # The next command runs over new connections and starts an agent for this inventory.
        assert _exec(cli, name, "--", "true").returncode == 0
        assert _wait_for_agent(state_dir)["pid"] != pid
    finally:
        inventory.write_text(original)


def test_down_leaves_no_agent(cli: Cli, tmp_path: Path) -> None:
    name = unique_name("ag")
    spec = write_spec(tmp_path, name, 2)
    state_dir = cli.home / "clusters" / name
    cli.run("up", str(spec), check=True)
    try:
        assert _exec(cli, name, "--", "true").returncode == 0
        pid = _wait_for_agent(state_dir)["pid"]
    finally:
        cli.run("down", name, "--yes", check=True)
    # `down` stops the agent before destroying the nodes; at the latest, an agent notices
    # within a second that its inventory is gone.
    assert wait_gone(pid, 3)
    assert processes_mentioning(f"dlvm_cluster.agent {state_dir}") == []


def _served(state_dir: Path) -> int:
    answer = agent_client.ping(state_dir)
    assert answer is not None, "no agent answers"
    return int(answer["served"])


def _remote_digests(cli: Cli, name: str, path: str) -> dict[str, str]:
    """node -> sha256 of `path` there, over new connections."""
    done = _exec(cli, name, "--", f"sha256sum {path} | cut -c1-64", DLVM_NO_AGENT="1")
    assert done.returncode == 0, done.stderr
    return {
        line.split("] ")[0].lstrip("["): line.split("] ")[1] for line in done.stdout.splitlines()
    }


def _payload(state_dir: Path) -> Path:
    """The cluster's `files` source: the payload folder beside its spec file."""
    return Path(json.loads((state_dir / "spec.json").read_text())["source"]).parent / "payload"


def test_sync_through_the_agent_sends_only_what_changed(
    cli: Cli, cluster: tuple[str, Path]
) -> None:
    name, state_dir = cluster
    payload = _payload(state_dir)
    _warm(cli, name, state_dir)
    changed = payload / "file1.txt"
    changed.write_text("version 2, longer than the first\n")
    served = _served(state_dir)
    done = _run(cli, "sync", name)
    assert done.returncode == 0, done.stderr
    assert "synced 3 node(s): 3 file(s) sent" in done.stdout  # one per node
    assert _served(state_dir) == served + 1, "not served by the agent"
    want = hashlib.sha256(changed.read_bytes()).hexdigest()
    assert set(_remote_digests(cli, name, "~/payload/file1.txt").values()) == {want}
    # Deletions only with --delete, also through the agent.
    (payload / "file2.txt").unlink()
    try:
        kept = _run(cli, "sync", name)
        assert kept.returncode == 0 and "0 deleted" in kept.stdout, kept.stdout
        gone = _run(cli, "sync", name, "--delete")
        assert gone.returncode == 0 and "3 deleted" in gone.stdout, gone.stdout
        assert _served(state_dir) == served + 3
        left = _exec(cli, name, "--", "ls ~/payload", DLVM_NO_AGENT="1").stdout
        assert "file2.txt" not in left and left.count("file0.txt") == 3
    finally:
        (payload / "file2.txt").write_text("version 1 of 2\n")


def test_ctrl_c_of_a_sync_through_the_agent_stops_the_transfer(
    cli: Cli, cluster: tuple[str, Path]
) -> None:
    name, state_dir = cluster
    big = _payload(state_dir) / "big.bin"
    with open(big, "wb") as handle:
        handle.truncate(1 << 30)  # read as 1 GiB of zeros: seconds to send to 3 nodes
    served = (
        _served(state_dir)
        if agent_client.ping(state_dir)
        else _warm(cli, name, state_dir)["served"]
    )
    try:
        with cli.background("sync", name) as process:
            wait_until(
                lambda: _extracting(name), 60, interval=0.05, message="no tar started on the nodes"
            )
            process.send_signal(signal.SIGINT)
            _, err = process.communicate(timeout=60)
    finally:
        big.unlink()
    assert process.returncode == 130, err
    # Nothing of the transfer is left on any node, and the agent serves on.
    assert not _extracting(name)
    assert _served(state_dir) == served + 1
    done = _run(cli, "sync", name, "--delete")
    assert done.returncode == 0, done.stderr
    assert _exec(cli, name, "--", "ls ~/payload").stdout.count("big.bin") == 0


def _extracting(cluster: str) -> bool:
    return any("tar -x" in args for args in namespace_processes(cluster).values())


def test_warm_exec_imports_no_heavy_module(cli: Cli, cluster: tuple[str, Path]) -> None:
    """The warm path answers without typer, rich, ruamel or paramiko: their import would be
    most of a warm command's time. (pydantic is not in the list: this cluster's env has a
    secret, which is read through the spec model; a plain env is read without it.)"""
    name, state_dir = cluster
    served = _warm(cli, name, state_dir)["served"]
    script = (
        "import atexit, sys\n"
        "atexit.register(lambda: sys.stderr.write('MODULES ' + ' '.join(sys.modules) + '\\n'))\n"
        f"sys.argv = ['dlvm', 'exec', {name!r}, '-n', '0-1', '--', 'echo', 'hi']\n"
        "from dlvm_cluster.cli.fast_path import main\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=cli.env(), timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == ["[node-0] hi", "[node-1] hi"]
    assert _served(state_dir) == served + 2  # the secrets the nodes hold, then the command
    modules = set(done.stderr.split("MODULES ", 1)[1].split())
    heavy = {"typer", "rich", "click", "ruamel", "paramiko", "cryptography"}
    assert not {module.split(".")[0] for module in modules} & heavy


def test_exec_and_sync_json(cli: Cli, cluster: tuple[str, Path]) -> None:
    """`--json`: one document on stdout with each node's result; node output on stderr."""
    name, _ = cluster
    done = _exec(cli, name, "--json", "--", "echo out-$DLVM_NODE_RANK; exit $DLVM_NODE_RANK")
    assert done.returncode == 1
    data = json.loads(done.stdout)
    assert data["ok"] is False
    assert [(n["name"], n["exit_code"], n["tail"]) for n in data["nodes"]] == [
        (f"node-{rank}", rank, [f"out-{rank}"]) for rank in range(3)
    ]
    assert sorted(line for line in done.stderr.splitlines() if line.startswith("[")) == [
        f"[node-{rank}] out-{rank}" for rank in range(3)
    ]
    assert _run(cli, "sync", name).returncode == 0  # whatever earlier tests left: in sync
    synced = _run(cli, "sync", name, "--json")
    assert synced.returncode == 0, synced.stderr
    results = json.loads(synced.stdout)
    assert sorted(r["node"] for r in results) == ["node-0", "node-1", "node-2"]
    assert all(r["error"] == "" and r["sent_files"] == 0 for r in results)


def test_a_missing_source_is_an_error_not_an_empty_tree(
    cli: Cli, cluster: tuple[str, Path]
) -> None:
    """`sync --delete` of a source that is gone must not read it as empty and wipe the nodes."""
    name, state_dir = cluster
    payload = _payload(state_dir)
    moved = payload.rename(payload.with_name("payload-away"))
    try:
        for agent in ("0", "1"):  # through the agent, and over new connections
            done = _run(cli, "sync", name, "--delete", DLVM_NO_AGENT=agent)
            assert done.returncode == 2, done.stderr
            assert "files: payload does not exist" in done.stderr
            assert "Traceback" not in done.stderr
    finally:
        moved.rename(payload)
    left = _exec(cli, name, "--", "ls ~/payload", DLVM_NO_AGENT="1").stdout
    assert left.count("file0.txt") == 3


NO_CONNECTION = (
    "import sys\n"
    "from dlvm_cluster.remote.connection import Connection\n"
    "def refuse(cls, node, *args, **kwargs):\n"
    "    raise SystemExit(f'this command opened a connection to {node.name}')\n"
    "Connection.open = classmethod(refuse)\n"
    "sys.argv = ['dlvm', *sys.argv[1:]]\n"
    "from dlvm_cluster.cli.app import main\n"
    "main()\n"
)


def _counted_up(cli: Cli, spec: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`dlvm up SPEC --json` in a process where opening an SSH connection fails at once."""
    return subprocess.run(
        [sys.executable, "-c", NO_CONNECTION, "up", str(spec), "--json"],
        capture_output=True,
        text=True,
        env={**cli.env(), **env},
        timeout=300,
    )


def test_an_unchanged_up_goes_through_the_warm_agent(cli: Cli, tmp_path: Path) -> None:
    """`up` of the applied spec opens no connection of its own while the agent serves the
    nodes: reaching them, the intra-cluster keys (their stdin), the watcher, setup and a
    changed file all go through the agent's connections; without an agent it connects."""
    name = unique_name("ag")
    (tmp_path / "payload").mkdir()
    changed = tmp_path / "payload" / "file0.txt"
    changed.write_text("version 1\n")
    spec = write_spec(
        tmp_path,
        name,
        2,
        "env: {GREETING: hello}\nsetup: echo set up\nfiles:\n  - {src: payload, dst: ~/payload}\n",
    )
    state_dir = cli.home / "clusters" / name
    key = f"~/.ssh/dlvm_{name}_ed25519"
    cli.run("up", str(spec), check=True)
    try:
        served = _warm(cli, name, state_dir)["served"]
        assert _exec(cli, name, "--", f"rm {key}", DLVM_NO_AGENT="1").returncode == 0
        changed.write_text("changed while the agent was warm\n")
        done = _counted_up(cli, spec)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["files_sent"] == 2  # the file, once per node
        assert _served(state_dir) > served
        back = _exec(cli, name, "--", f"test -s {key} && echo key", DLVM_NO_AGENT="1")
        assert back.stdout.count("key") == 2, back.stdout + back.stderr
        want = hashlib.sha256(changed.read_bytes()).hexdigest()
        assert set(_remote_digests(cli, name, "~/payload/file0.txt").values()) == {want}
        assert agent_process.stop(state_dir)
        cold = _counted_up(cli, spec, DLVM_NO_AGENT="1")
        assert cold.returncode != 0
        assert "this command opened a connection" in cold.stderr
    finally:
        cli.run("down", name, "--yes")
