"""Remote execution and file sync on a real local cluster: delta sync, setup once,
interrupts, partitions and intra-cluster SSH."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Cli, unique_name
from system import processes_mentioning, sleep_marker, wait_for_processes


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    data = root / "data"
    (data / "sub").mkdir(parents=True)
    for index in range(20):
        (data / "sub" / f"f{index}.bin").write_bytes(os.urandom(2000 + index))
    (data / "run.sh").write_text("#!/bin/sh\necho ran\n")
    (data / "run.sh").chmod(0o755)
    (data / "link").symlink_to("run.sh")
    (data / "skip.pyc").write_text("excluded")
    (data / "cache").mkdir()
    (data / "cache" / "big").write_text("excluded dir")
    return root


@pytest.fixture(scope="module")
def cluster(cli: Cli, project: Path) -> Iterator[tuple[str, Path]]:
    name = unique_name("rm")
    spec = project / "cluster.yaml"
    spec.write_text(
        f"name: {name}\n"
        "provider: {kind: local}\n"
        "nodes: {count: 3}\n"
        "env: {GREETING: hello}\n"
        "files:\n"
        '  - {src: data, dst: ~/data, exclude: ["*.pyc", cache]}\n'
        "setup: |\n"
        '  echo "setup $GREETING" >> ~/setup-runs\n'
    )
    cli.run("up", str(spec), check=True)
    try:
        yield name, spec
    finally:
        cli.run("down", name, "--yes")


def _by_node(stdout: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        node, _, text = line.partition("] ")
        found.setdefault(node.lstrip("["), []).append(text)
    return found


def _remote_digests(cli: Cli, name: str) -> dict[str, list[str]]:
    result = cli.run(
        "exec", name, "--", "cd ~/data && find . -type f | sort | xargs sha256sum", check=True
    )
    return _by_node(result.stdout)


def _local_digests(data: Path) -> list[str]:
    lines = []
    for path in sorted(p for p in data.rglob("*") if p.is_file() and not p.is_symlink()):
        relative = path.relative_to(data).as_posix()
        if relative.endswith(".pyc") or relative.startswith("cache/"):
            continue
        lines.append((f"./{relative}", hashlib.sha256(path.read_bytes()).hexdigest()))
    return [f"{digest}  {path}" for path, digest in sorted(lines)]


def test_files_arrive_with_modes_symlinks_and_excludes(cli: Cli, cluster: tuple[str, Path]) -> None:
    name, spec = cluster
    expected = _local_digests(spec.parent / "data")
    for node, lines in _remote_digests(cli, name).items():
        assert lines == expected, node
    result = cli.run(
        "exec",
        name,
        "--",
        "cd ~/data && ./run.sh && readlink link && (test -e cache || echo absent)",
    )
    for lines in _by_node(result.stdout).values():
        assert lines == ["ran", "run.sh", "absent"]


def test_delta_sync_sends_only_the_changed_file(cli: Cli, cluster: tuple[str, Path]) -> None:
    name, spec = cluster
    unchanged = cli.run("sync", name, check=True)
    assert "0 file(s) sent" in unchanged.stdout
    changed = spec.parent / "data" / "sub" / "f3.bin"
    changed.write_bytes(os.urandom(5000))
    result = cli.run("sync", name, check=True)
    assert "3 file(s) sent (15000 bytes)" in result.stdout  # one file to each of 3 nodes
    expected = _local_digests(spec.parent / "data")
    for node, lines in _remote_digests(cli, name).items():
        assert lines == expected, node


def test_deletions_only_with_delete(cli: Cli, cluster: tuple[str, Path]) -> None:
    name, _ = cluster
    cli.run("exec", name, "--", "touch ~/data/extra", check=True)
    cli.run("sync", name, check=True)
    assert cli.run("exec", name, "--", "test -e ~/data/extra").returncode == 0
    cli.run("sync", name, "--delete", check=True)
    assert cli.run("exec", name, "--", "test ! -e ~/data/extra").returncode == 0
    # Excluded paths are never deleted, even with --delete.
    cli.run("exec", name, "--", "touch ~/data/keep.pyc", check=True)
    cli.run("sync", name, "--delete", check=True)
    assert cli.run("exec", name, "--", "test -e ~/data/keep.pyc").returncode == 0


def test_delete_of_more_than_a_few_files_lists_them_and_asks(
    cli: Cli, cluster: tuple[str, Path]
) -> None:
    """A checkpoint the job wrote into its workdir is not in the source either: more than a
    few deletions on a node are listed first and need a yes (here, with no terminal, --yes)."""
    name, _ = cluster
    made = "mkdir -p ~/data/out && touch ~/data/out/snapshot-$DLVM_NODE_RANK-{1,2,3,4,5,6,7}.pt"
    cli.run("exec", name, "--", f"bash -c '{made}'", check=True)
    asked = cli.run("sync", name, "--delete")
    assert asked.returncode == 2, asked.stderr
    assert "node-0: --delete would delete 7 file(s):" in asked.stderr
    assert "  out/snapshot-0-7.pt" in asked.stderr
    assert "no terminal to ask on" in asked.stderr
    left = cli.run("exec", name, "--", "ls ~/data/out | wc -l", check=True)
    assert all(line.endswith("] 7") for line in left.stdout.splitlines()), left.stdout
    done = cli.run("sync", name, "--delete", "--yes", check=True)
    assert "3 deleted" in done.stdout  # the folder, with its 7 files, on each of 3 nodes
    assert cli.run("exec", name, "--", "test ! -e ~/data/out").returncode == 0


def test_pull_gives_one_folder_per_node(
    cli: Cli, cluster: tuple[str, Path], tmp_path: Path
) -> None:
    name, _ = cluster
    cli.run("exec", name, "--", "mkdir -p ~/out && hostname > ~/out/who", check=True)
    cli.run("sync", name, "--down", "--remote", "~/out", "--local", str(tmp_path), check=True)
    for rank in range(3):
        assert (tmp_path / f"node-{rank}" / "who").read_text().strip() == f"node-{rank}"


def test_setup_runs_once_and_again_only_when_changed(cli: Cli, cluster: tuple[str, Path]) -> None:
    name, spec = cluster
    result = cli.run("up", str(spec), check=True)
    assert "nothing to do" in result.stdout
    runs = cli.run("exec", name, "--", "cat ~/setup-runs", check=True)
    assert all(lines == ["setup hello"] for lines in _by_node(runs.stdout).values())
    spec.write_text(spec.read_text().replace("GREETING: hello", "GREETING: again"))
    cli.run("up", str(spec), check=True)
    cli.run("up", str(spec), "--rerun-setup", check=True)
    runs = cli.run("exec", name, "--", "cat ~/setup-runs", check=True)
    for lines in _by_node(runs.stdout).values():
        assert lines == ["setup hello", "setup again", "setup again"]


def test_intra_cluster_ssh_by_name_and_address(cli: Cli, cluster: tuple[str, Path]) -> None:
    name, _ = cluster
    result = cli.run(
        "exec",
        name,
        "--",
        "for n in node-0 node-1 node-2; do ssh $n hostname; done; "
        "for ip in $DLVM_NODE_IPS; do ssh $ip hostname; done",
        check=True,
    )
    for lines in _by_node(result.stdout).values():
        assert lines == ["node-0", "node-1", "node-2"] * 2


def test_interrupt_leaves_no_process_on_any_node(cli: Cli, cluster: tuple[str, Path]) -> None:
    name, _ = cluster
    marker = sleep_marker(617)
    with cli.background("exec", name, "--", f"{marker} & {marker}; wait") as process:
        assert len(wait_for_processes(marker, 6)) == 6  # two per node
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert processes_mentioning(marker) == []


def test_timeout_kills_and_reports(cli: Cli, cluster: tuple[str, Path]) -> None:
    name, _ = cluster
    marker = sleep_marker(618)
    result = cli.run(
        "exec", name, "--timeout", "2", "--", f"[ $DLVM_NODE_RANK = 1 ] && {marker}; echo quick"
    )
    assert result.returncode == 1
    assert "node-1: timed out after 2s" in result.stderr
    assert processes_mentioning(marker) == []


def test_partitioned_node_is_reported_and_others_finish(
    cli: Cli, cluster: tuple[str, Path]
) -> None:
    name, _ = cluster
    tfvars = json.loads(
        (cli.home / "clusters" / name / "terraform" / "terraform.tfvars.json").read_text()
    )
    veth = tfvars["nodes"]["node-1"]["veth"]
    with cli.background("exec", name, "--", "sleep 4; echo finished") as process:
        try:
            time.sleep(1.5)
            subprocess.run(["ip", "link", "set", veth, "down"], check=True)
            out, err = process.communicate(timeout=60)
        finally:
            subprocess.run(["ip", "link", "set", veth, "up"], check=True)
    assert process.returncode == 1
    assert "[node-0] finished" in out and "[node-2] finished" in out
    assert "[node-1] finished" not in out
    assert "node-1: lost" in err
    status = cli.status(name)
    assert all(node["reachable"] for node in status["nodes"])  # type: ignore[index]


def test_failed_setup_names_the_node_and_keeps_the_cluster(cli: Cli, tmp_path: Path) -> None:
    name = unique_name("fs")
    spec = tmp_path / "c.yaml"
    spec.write_text(
        f"name: {name}\nprovider: {{kind: local}}\nnodes: {{count: 2}}\n"
        "setup: |\n  echo preparing\n  [ $DLVM_NODE_RANK = 1 ] && echo broken && exit 7\n  true\n"
    )
    try:
        result = cli.run("up", str(spec))
        assert result.returncode == 1
        assert "setup failed on node-1 (exit 7)" in result.stderr
        assert "broken" in result.stderr
        assert "Traceback" not in result.stderr
        assert cli.run("exec", name, "--", "true").returncode == 0
    finally:
        cli.run("down", name, "--yes", check=True)
