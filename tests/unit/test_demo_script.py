"""examples/demo.sh under a cluster name of the user's choosing: every dlvm command it runs
names that cluster, and the cluster file it brings up is examples/local.yaml under that name
(its paths still reaching examples/). dlvm here is a stand-in that records its calls."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from harness import REPO

from dlvm_cluster.providers import load_spec

SCRIPT = REPO / "examples" / "demo.sh"


def run_demo(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    calls = tmp_path / "calls"
    fake = tmp_path / "dlvm"
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {calls}\n'
        f'if [ "$1" = up ]; then cp "$2" {tmp_path / "spec.yaml"}; fi\n'
    )
    fake.chmod(0o755)
    done = subprocess.run(
        ["bash", str(SCRIPT), "--skip-install", *args],
        env={**os.environ, "DLVM": str(fake)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done, calls.read_text().splitlines() if calls.exists() else []


def test_demo_runs_under_the_name_given(tmp_path: Path) -> None:
    done, calls = run_demo(tmp_path, "mine-2")
    assert done.returncode == 0, done.stderr
    assert [call.split()[:2] for call in calls] == [
        ["up", calls[0].split()[1]],
        ["exec", "mine-2"],
        ["launch", "mine-2"],
        ["status", "mine-2"],
        ["down", "mine-2"],
    ]
    spec = load_spec(tmp_path / "spec.yaml").spec
    assert spec.name == "mine-2"
    assert spec.files[0].src == str(REPO / "examples")
    assert not Path(calls[0].split()[1]).exists()  # the scratch copy is removed


def test_demo_defaults_to_the_example_file(tmp_path: Path) -> None:
    done, calls = run_demo(tmp_path)
    assert done.returncode == 0, done.stderr
    assert calls[0] == "up examples/local.yaml --yes"
    assert calls[-1] == "down demo --yes"


@pytest.mark.parametrize("name", ["Demo", "a/b", "x-", "-x", "a b"])
def test_a_bad_name_is_refused_before_anything_runs(tmp_path: Path, name: str) -> None:
    done, calls = run_demo(tmp_path, name)
    assert done.returncode == 2 and "error: cluster name" in done.stderr
    assert calls == []
