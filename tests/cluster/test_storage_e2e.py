"""Shared storage on the local provider: a folder under DLVM_HOME/storage/BUCKET/PREFIX that
every node sees at its mount, read-only where asked, named by DLVM_CHECKPOINT_DIR, and kept
through `down` and a fresh `up` as a bucket would be."""

from __future__ import annotations

import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import Cli, unique_name, write_spec


@dataclass(frozen=True)
class StorageCluster:
    name: str
    spec: Path
    checkpoints: str  # the checkpoint mount on the nodes
    data: str  # the read-only mount on the nodes
    checkpoint_folder: Path  # the host folder behind it
    data_folder: Path


@pytest.fixture(scope="module")
def storage_cluster(cli: Cli, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StorageCluster]:
    name = unique_name("st")
    bucket = f"dlvm-test-{name}"
    mounts = Path("/mnt") / name
    extra = (
        "storage:\n"
        f"  - {{mount: {mounts}/data, bucket: gs://{bucket}/shared, read_only: true}}\n"
        f"  - {{mount: {mounts}/ckpt, bucket: gs://{bucket}/run1, checkpoint: true}}\n"
        # setup runs after the mounts: it sees them, and DLVM_CHECKPOINT_DIR
        'setup: echo "setup $DLVM_CHECKPOINT_DIR" > "$DLVM_CHECKPOINT_DIR/setup-$(hostname)"\n'
        "job: {framework: none, command: 'echo \"job-dir=$DLVM_CHECKPOINT_DIR\"'}\n"
    )
    spec = write_spec(tmp_path_factory.mktemp("spec"), name, 2, extra)
    folders = cli.home / "storage" / bucket
    try:
        cli.run("up", str(spec), check=True)
        yield StorageCluster(
            name,
            spec,
            checkpoints=f"{mounts}/ckpt",
            data=f"{mounts}/data",
            checkpoint_folder=folders / "run1",
            data_folder=folders / "shared",
        )
    finally:
        cli.run("down", name, "--yes")
        shutil.rmtree(folders, ignore_errors=True)
        shutil.rmtree(mounts, ignore_errors=True)  # the empty mount points on the host


def _on(cli: Cli, cluster: StorageCluster, node: str, command: str) -> str:
    result = cli.run("exec", cluster.name, "--nodes", node, "--", command, check=True)
    return result.stdout


def test_a_file_written_on_one_node_is_read_on_the_other(
    cli: Cli, storage_cluster: StorageCluster
) -> None:
    _on(cli, storage_cluster, "node-0", 'echo written-on-0 > "$DLVM_CHECKPOINT_DIR/shared.txt"')
    assert "written-on-0" in _on(
        cli, storage_cluster, "node-1", f"cat {storage_cluster.checkpoints}/shared.txt"
    )
    # The folder standing in for the bucket is on the host, private to its owner.
    assert (storage_cluster.checkpoint_folder / "shared.txt").read_text() == "written-on-0\n"
    assert stat.S_IMODE(storage_cluster.checkpoint_folder.stat().st_mode) == 0o700
    # setup ran on both nodes after the mounts were made, with DLVM_CHECKPOINT_DIR set.
    for node in ("node-0", "node-1"):
        written = (storage_cluster.checkpoint_folder / f"setup-{node}").read_text()
        assert written == f"setup {storage_cluster.checkpoints}\n"


def test_plan_shows_the_mounts(cli: Cli, storage_cluster: StorageCluster) -> None:
    planned = cli.run("plan", str(storage_cluster.spec), check=True).stdout
    bucket = storage_cluster.checkpoint_folder.parent.name
    assert (
        f"storage: {storage_cluster.checkpoints} <- gs://{bucket}/run1 "
        "(read-write, DLVM_CHECKPOINT_DIR; kept by down)" in planned
    )
    assert f"storage: {storage_cluster.data} <- gs://{bucket}/shared (read-only;" in planned


def test_exec_and_jobs_get_the_checkpoint_dir(cli: Cli, storage_cluster: StorageCluster) -> None:
    out = _on(cli, storage_cluster, "node-1", 'echo "dir=$DLVM_CHECKPOINT_DIR"')
    assert f"dir={storage_cluster.checkpoints}" in out
    job = cli.run("launch", storage_cluster.name, check=True)
    assert job.stdout.count(f"job-dir={storage_cluster.checkpoints}") == 2


def test_a_read_only_mount_refuses_writes(cli: Cli, storage_cluster: StorageCluster) -> None:
    (storage_cluster.data_folder / "seed.txt").write_text("seed\n")
    assert "seed" in _on(cli, storage_cluster, "node-1", f"cat {storage_cluster.data}/seed.txt")
    refused = cli.run(
        "exec",
        storage_cluster.name,
        "--nodes",
        "node-0",
        "--",
        f"touch {storage_cluster.data}/nope",
    )
    assert refused.returncode != 0
    assert "Read-only file system" in refused.stdout + refused.stderr
    assert not (storage_cluster.data_folder / "nope").exists()
    # `up` again on the healthy cluster mounts again, idempotently: still one read-only mount.
    cli.run("up", str(storage_cluster.spec), check=True)
    mounts = _on(cli, storage_cluster, "node-0", f"grep -c ' {storage_cluster.data} ' /proc/mounts")
    assert mounts.strip().endswith("1")
    again = cli.run(
        "exec", storage_cluster.name, "--nodes", "node-0", "--", f"touch {storage_cluster.data}/x"
    )
    assert "Read-only file system" in again.stdout + again.stderr


def test_storage_outlives_down_and_a_fresh_up(cli: Cli, storage_cluster: StorageCluster) -> None:
    _on(cli, storage_cluster, "node-1", f"echo kept > {storage_cluster.checkpoints}/kept.txt")
    cli.run("down", storage_cluster.name, "--yes", check=True)
    assert (storage_cluster.checkpoint_folder / "kept.txt").read_text() == "kept\n"
    cli.run("up", str(storage_cluster.spec), check=True)  # fresh namespaces for both nodes
    # A node that `scale` adds mounts the storage too (as a replacement node does).
    cli.run("scale", storage_cluster.name, "3", "--yes", check=True)
    for node in ("node-0", "node-1", "node-2"):
        assert "kept" in _on(
            cli, storage_cluster, node, f"cat {storage_cluster.checkpoints}/kept.txt"
        )
