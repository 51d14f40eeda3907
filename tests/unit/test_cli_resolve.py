"""cli/resolve.py: a CLUSTER argument becomes the cluster's state, and its file (parsed once)
when it is one; a name neither needs nor imports the spec's parser."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dlvm_cluster.cli.app import app
from dlvm_cluster.cli.resolve import is_cluster_file, resolve
from dlvm_cluster.errors import UsageError
from dlvm_cluster.orchestrate.jobs.store import JobRecord
from dlvm_cluster.spec import load as spec_load
from dlvm_cluster.state import ClusterState

REPO = Path(__file__).resolve().parents[2]
SPEC = (
    "name: rsv\nprovider: {kind: local}\nnodes: {count: 1}\njob: {framework: none, command: echo}\n"
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DLVM_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "home"


def _make_cluster(home: Path, name: str) -> None:
    (home / "clusters" / name).mkdir(parents=True)
    (home / "clusters" / name / "inventory.json").write_text("{}")


def test_a_name_is_a_cluster_that_exists(home: Path) -> None:
    _make_cluster(home, "alpha")
    resolved = resolve("alpha")
    assert resolved.state == ClusterState.for_name("alpha") and resolved.loaded is None


def test_an_unknown_name_lists_the_known_clusters(home: Path) -> None:
    _make_cluster(home, "alpha")
    _make_cluster(home, "beta")
    with pytest.raises(UsageError, match="no cluster named 'gamma'") as caught:
        resolve("gamma")
    assert caught.value.hint == "known clusters: alpha, beta"


def test_a_file_names_its_cluster_and_comes_loaded(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(SPEC)
    resolved = resolve(str(path))
    assert resolved.state.name == "rsv"  # need not be up yet
    assert resolved.loaded is not None and resolved.loaded.spec.name == "rsv"


@pytest.mark.parametrize(
    ("target", "is_file"),
    [("c.yaml", True), ("c.yml", True), ("plain", False), ("existing", True)],
)
def test_what_counts_as_a_file(home: Path, tmp_path: Path, target: str, is_file: bool) -> None:
    (tmp_path / "existing").write_text(SPEC)  # a file shadows a cluster of the same name
    assert is_cluster_file(target) is is_file


def test_launch_of_a_file_parses_it_once(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(SPEC)
    parsed: list[Path] = []
    real = spec_load.load_spec

    def counting(where: Path, kinds: Any) -> Any:
        parsed.append(where)
        return real(where, kinds)

    given: dict[str, Any] = {}

    def fake_launch(state: ClusterState, progress: object, **options: Any) -> JobRecord:
        given.update(options, cluster=state.name)
        return JobRecord("j1", state.name, "none", "true", "~", ["node-0"], 20000, 1.0)

    monkeypatch.setattr(spec_load, "load_spec", counting)
    monkeypatch.setattr("dlvm_cluster.orchestrate.jobs.verbs.launch", fake_launch)
    result = CliRunner().invoke(app, ["launch", str(path), "--detach", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["id"] == "j1"
    assert parsed == [path]
    assert given["cluster"] == "rsv" and given["loaded"].spec.name == "rsv"


def test_a_name_imports_no_spec_parser(home: Path) -> None:
    """The fast path resolves names: pydantic and ruamel would double its start-up."""
    _make_cluster(home, "alpha")
    code = (
        "import sys\n"
        "from dlvm_cluster.cli.resolve import resolve\n"
        "assert resolve('alpha').state.name == 'alpha'\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pydantic', 'ruamel')))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "DLVM_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout
