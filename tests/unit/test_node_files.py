"""What dlvm keeps on a node, run by a real shell in a scratch home: each cluster's files in
its own folder, `down`'s clean-up of one cluster only, and reading back the secrets a node
holds (to mask them) exactly, whatever the values."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from dlvm_cluster import secret_env
from dlvm_cluster.inventory import Inventory, Node, node_dir
from dlvm_cluster.orchestrate.cluster.mesh import uninstall_script
from dlvm_cluster.orchestrate.nodes.masking import Batch, LineSink, read_masking
from dlvm_cluster.remote.command import install_secrets, source_secrets
from dlvm_cluster.remote.results import CommandResult, GroupResult

NODES = tuple(
    Node(name=f"node-{rank}", rank=rank, ip="10.0.0.1", port=22, user="u", host_key="k")
    for rank in range(2)
)


def sh(home: Path, text: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["sh", "-c", text],
        input=stdin,
        capture_output=True,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        check=False,
    )


def install(home: Path, cluster: str, values: dict[str, str]) -> None:
    done = sh(home, install_secrets(cluster), secret_env.file_content(values))
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("name", ["", "../x", "a/b", "-a", "A", "a b"])
def test_a_cluster_name_that_could_leave_its_folder_is_refused(name: str) -> None:
    with pytest.raises(ValueError):
        node_dir(name)


def test_clusters_keep_their_own_secrets(tmp_path: Path) -> None:
    install(tmp_path, "one", {"S": "first"})
    install(tmp_path, "two", {"S": "second"})
    for cluster, value in (("one", "first"), ("two", "second")):
        seen = sh(tmp_path, f'{source_secrets(cluster)}printf %s "$S"')
        assert seen.stdout.decode() == value
    mode = (tmp_path / ".dlvm/node-files/one/secrets.env").stat().st_mode & 0o777
    assert mode == 0o600


def test_down_removes_only_its_cluster_and_then_the_empty_folders(tmp_path: Path) -> None:
    install(tmp_path, "one", {"S": "first"})
    install(tmp_path, "two", {"S": "second"})
    assert sh(tmp_path, uninstall_script("one")).returncode == 0
    files = tmp_path / ".dlvm" / "node-files"
    assert not (files / "one").exists()
    assert (files / "two" / "secrets.env").exists()
    assert sh(tmp_path, uninstall_script("two")).returncode == 0
    assert not (tmp_path / ".dlvm").exists()
    # What else lives in ~/.dlvm (a user's own files) stays, and so does the folder.
    install(tmp_path, "one", {"S": "first"})
    (tmp_path / ".dlvm" / "mine").write_text("keep")
    assert sh(tmp_path, uninstall_script("one")).returncode == 0
    assert (tmp_path / ".dlvm" / "mine").read_text() == "keep"
    assert not files.exists()


def _local_batch(home: Path) -> Batch:
    """A Batch that runs each command in a local shell whose home is `home`."""

    def run(nodes: Sequence[Node], commands: Sequence[str], sink: LineSink) -> GroupResult:
        results = []
        for node, command in zip(nodes, commands, strict=True):
            done = sh(home, command)
            for line in done.stdout.decode().splitlines():
                sink(node, "out", line)
            results.append(CommandResult(node=node.name, rank=node.rank, exit_code=done.returncode))
        return GroupResult(results=tuple(results))

    return run


def test_masking_reads_the_values_the_node_holds(tmp_path: Path) -> None:
    held = {"TOKEN": "held-token-value", "ODD": 'it\'s a "multi"\nline $value', "SHORT": "abc"}
    install(tmp_path, "one", held)
    inventory = Inventory(cluster="one", nodes=NODES)
    # Nothing is known here (the variables are unset): the nodes' values are masked.
    masking = read_masking(inventory, NODES, sorted(held), {}, _local_batch(tmp_path))
    assert masking is not None and not masking.unreadable
    assert masking.redact("x held-token-value y") == "x *** y"
    assert masking.redact("line $value") == "***"  # a line of a multi-line value, alone
    assert masking.redact("line $other") == "line $other"
    assert masking.redact('it\'s a "multi"\nline $value') == "***"


def test_a_node_whose_secrets_cannot_be_read_is_not_run(tmp_path: Path) -> None:
    inventory = Inventory(cluster="one", nodes=NODES)

    def failing(nodes: Sequence[Node], commands: Sequence[str], sink: LineSink) -> GroupResult:
        results = [CommandResult(node=n.name, rank=n.rank, exit_code=0) for n in nodes]
        results[1] = CommandResult(node="node-1", rank=1, error="unreachable: gone")
        for node in nodes:
            sink(node, "out", "")  # an empty value: not set there
        return GroupResult(results=tuple(results))

    masking = read_masking(inventory, NODES, ["TOKEN"], {"TOKEN": "local-value"}, failing)
    assert masking is not None
    assert masking.runnable(NODES) == NODES[:1]
    assert masking.redact("local-value") == "***"
    merged = masking.merge(NODES, GroupResult(results=(CommandResult("node-0", 0, 0),)))
    assert [r.node for r in merged.results] == ["node-0", "node-1"]
    assert "unreachable: gone" in merged.results[1].error
    assert not merged.ok
