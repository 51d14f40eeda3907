"""Every directory dlvm makes is 0700, its parents included, and one of its directories found
open to others (DLVM_HOME and clusters/ were made 0755 before) is narrowed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from dlvm_cluster.orchestrate.jobs.store import JobRecord, JobStore
from dlvm_cluster.orchestrate.nodes.commands import _new_log_dir
from dlvm_cluster.state import ClusterState, private_dir


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_fresh_dlvm_home_is_private_all_the_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "not" / "yet" / "home"
    monkeypatch.setenv("DLVM_HOME", str(home))
    old = os.umask(0o022)
    try:
        state = ClusterState.for_name("demo")
        state.create()
        log_dir = _new_log_dir(state.logs_dir / "exec" / "20260101-000000")
        JobStore(state).create(_record(state))
    finally:
        os.umask(old)
    made = [
        tmp_path / "not",
        tmp_path / "not" / "yet",
        home,
        home / "clusters",
        state.root,
        state.root / "ssh",
        state.logs_dir,
        state.logs_dir / "exec",
        log_dir,
        state.root / "jobs",
    ]
    assert {str(path): oct(mode(path)) for path in made} == {str(p): "0o700" for p in made}


def _record(state: ClusterState) -> JobRecord:
    return JobRecord(
        id="j1",
        cluster=state.name,
        framework="none",
        command="true",
        workdir="~",
        nodes=["node-0"],
        port=20000,
        started=0.0,
    )


def test_an_existing_0755_home_is_narrowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    (home / "clusters" / "old").mkdir(parents=True)
    for path in (home, home / "clusters", home / "clusters" / "old"):
        path.chmod(0o755)
    monkeypatch.setenv("DLVM_HOME", str(home))
    ClusterState.for_name("demo").create()
    assert mode(home) == 0o700
    assert mode(home / "clusters") == 0o700
    assert mode(home / "clusters" / "demo") == 0o700
    assert mode(home / "clusters" / "old") == 0o755  # not on the way: left to its command


def test_a_shared_directory_is_never_narrowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DLVM_HOME pointed at a sticky, shared directory (like /tmp) keeps its mode."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    monkeypatch.setenv("DLVM_HOME", str(shared))
    private_dir(shared / "clusters" / "demo")
    assert mode(shared) == 0o1777
    assert mode(shared / "clusters") == 0o700
