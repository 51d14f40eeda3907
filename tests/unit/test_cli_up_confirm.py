"""`up` on a cluster that `dlvm scale` resized: orchestrate says what would be undone (no CLI
flag in its words); the CLI asks, or needs --yes when there is no terminal to ask on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dlvm_cluster.cli.app import app
from dlvm_cluster.errors import UsageError
from dlvm_cluster.inventory import Inventory
from dlvm_cluster.orchestrate.cluster import lifecycle
from dlvm_cluster.orchestrate.cluster.context import Cluster
from dlvm_cluster.orchestrate.cluster.files import SetupReport
from dlvm_cluster.providers import load_spec
from dlvm_cluster.spec.model import LoadedSpec

SPEC = "name: upc\nprovider: {kind: local}\nnodes: {count: 3}\n"


@pytest.fixture
def loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LoadedSpec:
    monkeypatch.setenv("DLVM_HOME", str(tmp_path / "home"))
    path = tmp_path / "upc.yaml"
    path.write_text(SPEC)
    return load_spec(path)


def test_no_scale_nothing_to_undo(loaded: LoadedSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Cluster, "scaled_count", lambda cluster: None)
    assert lifecycle.scale_undo(Cluster.of(loaded), loaded) is None
    monkeypatch.setattr(Cluster, "scaled_count", lambda cluster: 3)  # scaled to the file's
    assert lifecycle.scale_undo(Cluster.of(loaded), loaded) is None


def test_undo_says_the_numbers_and_no_flag(
    loaded: LoadedSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Cluster, "scaled_count", lambda cluster: 5)
    undo = lifecycle.scale_undo(Cluster.of(loaded), loaded)
    assert undo == lifecycle.ScaleUndo("upc", scaled=5, in_file=3, file_name="upc.yaml")
    assert undo.describe() == (
        "cluster upc was scaled to 5 node(s); upc.yaml says 3: up would remove 2 node(s)"
    )
    refused = lifecycle.WouldUndoScale(undo)
    assert isinstance(refused, UsageError) and refused.exit_code == 2
    assert "--" not in refused.message + refused.hint
    assert "nodes.count to 5" in refused.hint


def _fake_up(calls: list[bool]) -> Any:
    def up(
        cluster: Cluster, loaded: LoadedSpec, progress: object, **options: Any
    ) -> lifecycle.UpResult:
        calls.append(options["undo_scale"])
        if not options["undo_scale"]:
            raise lifecycle.WouldUndoScale(lifecycle.ScaleUndo("upc", 5, 3, "upc.yaml"))
        inventory = Inventory("upc", ())
        return lifecycle.UpResult(inventory, True, 0, SetupReport((), ()), 1.0)

    return up


def test_the_cli_needs_yes_without_a_terminal(
    loaded: LoadedSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bool] = []
    monkeypatch.setattr(lifecycle, "up", _fake_up(calls))
    refused = CliRunner().invoke(app, ["up", str(loaded.path), "-q"])
    assert isinstance(refused.exception, UsageError)
    assert "was scaled to 5" in refused.exception.message
    assert refused.exception.hint == (  # the CLI names its own flag
        "pass --yes to go ahead, or set nodes.count to 5 in upc.yaml"
    )
    assert calls == [False]


def test_yes_converges_to_the_file(loaded: LoadedSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []
    monkeypatch.setattr(lifecycle, "up", _fake_up(calls))
    done = CliRunner().invoke(app, ["up", str(loaded.path), "--yes", "--json"])
    assert done.exit_code == 0, done.output
    assert calls == [True]


# -- --wait: how long new VMs may take to be created ----------------------------------------


@pytest.mark.parametrize(
    ("given", "seconds"), [("30m", 1800.0), ("2h", 7200.0), ("1h30m", 5400.0), ("90s", 90.0)]
)
def test_wait_reaches_up_in_seconds(
    loaded: LoadedSpec, monkeypatch: pytest.MonkeyPatch, given: str, seconds: float
) -> None:
    waits: list[float | None] = []

    def up(
        cluster: Cluster, loaded: LoadedSpec, progress: object, **options: Any
    ) -> lifecycle.UpResult:
        waits.append(options["wait"])
        return lifecycle.UpResult(Inventory("upc", ()), True, 0, SetupReport((), ()), 1.0)

    monkeypatch.setattr(lifecycle, "up", up)
    result = CliRunner().invoke(app, ["up", str(loaded.path), "--wait", given])
    assert result.exit_code == 0, result.output
    assert CliRunner().invoke(app, ["up", str(loaded.path)]).exit_code == 0
    assert waits == [seconds, None]  # without it, the provider's default


@pytest.mark.parametrize("given", ["5x", "2 hours", "0m", "", "-1h"])
def test_a_wait_that_is_no_duration_is_a_usage_error(loaded: LoadedSpec, given: str) -> None:
    result = CliRunner().invoke(app, ["up", str(loaded.path), "--wait", given])
    assert result.exit_code == 2
    assert "--wait" in result.output


def test_the_wait_help_names_the_default_create_timeout() -> None:
    from dlvm_cluster.providers.gcp.tfvars import DEFAULT_CREATE_TIMEOUT

    result = CliRunner().invoke(app, ["up", "--help"])
    assert f"Default: {DEFAULT_CREATE_TIMEOUT}." in " ".join(result.output.split())
