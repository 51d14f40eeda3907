"""A local node is running while its init process runs in its namespace: known by one
readlink (init.ready's PID, netns's identity) instead of a scan of every process."""

from __future__ import annotations

import os
from pathlib import Path

from dlvm_cluster.providers.local import _init_alive


def node_dir(tmp_path: Path, pid: int, identity: str) -> Path:
    (tmp_path / "init.ready").write_text(f"{pid}\n")
    (tmp_path / "netns").write_text(f"{identity}\n")
    return tmp_path


def test_init_alive_in_its_namespace(tmp_path: Path) -> None:
    here = os.readlink("/proc/self/ns/net")
    assert _init_alive(node_dir(tmp_path, os.getpid(), here))


def test_another_namespace_a_dead_pid_or_no_record_is_not_proof(tmp_path: Path) -> None:
    assert not _init_alive(node_dir(tmp_path, os.getpid(), "net:[1]"))
    assert not _init_alive(node_dir(tmp_path, 2**22 + 1, os.readlink("/proc/self/ns/net")))
    assert not _init_alive(tmp_path / "absent")
    assert not _init_alive(node_dir(tmp_path, os.getpid(), ""))
