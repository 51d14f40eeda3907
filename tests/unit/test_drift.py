"""`launch NAME` after the cluster file changed since `up`: what changed is known from the
applied spec's record of the file (its path and text)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlvm_cluster.orchestrate.cluster.records import drift_since_applied, save_applied
from dlvm_cluster.providers import load_spec
from dlvm_cluster.state import ClusterState

TEXT = (
    "name: drift\nprovider: {kind: local}\nnodes: {count: 2}\n"
    "env: {OMP_NUM_THREADS: 1}\n"
    "job:\n  framework: torchrun\n  command: train.py\n"
)


@pytest.fixture
def applied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ClusterState, Path]:
    monkeypatch.setenv("DLVM_HOME", str(tmp_path / "home"))
    path = tmp_path / "cluster.yaml"
    path.write_text(TEXT)
    state = ClusterState.for_name("drift")
    state.create()
    save_applied(state, load_spec(path))
    return state, path


def test_unchanged_or_only_comments_is_no_drift(applied: tuple[ClusterState, Path]) -> None:
    state, path = applied
    assert drift_since_applied(state) is None
    path.write_text("# a comment\n" + TEXT.replace("count: 2", "count:  2"))
    assert drift_since_applied(state) is None


def test_an_edit_names_what_changed(applied: tuple[ClusterState, Path]) -> None:
    state, path = applied
    path.write_text(
        TEXT.replace("OMP_NUM_THREADS: 1", "OMP_NUM_THREADS: 1, CPU_SHIM: 1").replace(
            "train.py", "train.py 50 10"
        )
    )
    drift = drift_since_applied(state)
    assert drift is not None and drift.path == path.resolve()
    assert drift.changed == ("env", "job")


def test_a_file_that_no_longer_loads_says_why(applied: tuple[ClusterState, Path]) -> None:
    state, path = applied
    path.write_text(TEXT.replace("framework:", "framwork:"))
    drift = drift_since_applied(state)
    assert drift is not None and "unknown key 'framwork'" in drift.problem


def test_a_removed_file_is_no_drift(applied: tuple[ClusterState, Path]) -> None:
    state, path = applied
    path.unlink()
    assert drift_since_applied(state) is None
