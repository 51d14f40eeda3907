"""The Horovod build recipe refuses up front, naming what is missing, and leaves nothing.

Each case runs the real script with a PATH that lacks one tool (a folder of links to the
real ones it keeps): without the checks it would download the source and fail minutes later,
half way into CMake. The cache folder must stay empty: a wheel appears there only once a
build succeeded."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from harness import REPO

SCRIPT = REPO / "dlvm_cluster" / "nodeside" / "build_horovod.sh"
BASH = shutil.which("bash") or "/bin/bash"


def _run(tmp_path: Path, tools: list[str], python: str = sys.executable, **env: str) -> str:
    """The script's stderr, run with only `tools` on PATH; asserts it failed and cached
    nothing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ["head", *tools]:
        found = shutil.which(tool)
        assert found, f"this machine has no {tool}"
        (bin_dir / tool).symlink_to(found)
    cache = tmp_path / "cache"
    result = subprocess.run(
        [BASH, str(SCRIPT), "wheel"],
        env={
            "PATH": str(bin_dir),
            "HOME": str(tmp_path),
            "PYTHON": python,
            "XDG_CACHE_HOME": str(cache),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert not cache.exists() or not any(cache.iterdir())
    assert "fetching" not in result.stdout  # refused before downloading anything
    return result.stderr


@pytest.mark.parametrize(
    ("tools", "named"),
    [
        ([], "no C++ compiler (g++)"),
        (["g++"], "no cmake"),
        (["g++", "cmake"], "no make"),
    ],
)
def test_names_the_missing_tool(tmp_path: Path, tools: list[str], named: str) -> None:
    assert named in _run(tmp_path, tools)


def test_mpi_required_but_absent_is_named(tmp_path: Path) -> None:
    stderr = _run(tmp_path, ["g++", "cmake", "make"], HOROVOD_WITH_MPI="1")
    assert "no mpicxx" in stderr


def test_python_without_torch_is_named(tmp_path: Path) -> None:
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    stderr = _run(tmp_path, ["g++", "cmake", "make"], python=str(env / "bin" / "python"))
    assert "cannot import torch" in stderr


def test_unknown_mode_is_refused() -> None:
    result = subprocess.run(
        ["bash", str(SCRIPT), "build"], capture_output=True, text=True, env=dict(os.environ)
    )
    assert result.returncode == 2 and "usage: build_horovod.sh wheel|install" in result.stderr
