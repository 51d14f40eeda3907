"""Shared fixtures for both tiers: a private DLVM_HOME per test session and a real local
cluster. Helpers live in plain modules (harness.py, system.py, openpgp.py), imported by name.

Cluster tests need root (network namespaces); they are real end-to-end runs, never mocks.
tests/cluster/conftest.py marks and, without root, skips them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Cli, unique_name, write_spec
from openpgp import GnuPG, gnupg_home


@pytest.fixture(scope="session")
def dlvm_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dlvm-home")


@pytest.fixture(scope="session")
def cli(dlvm_home: Path) -> Cli:
    return Cli(dlvm_home)


@pytest.fixture(scope="module")
def cluster3(cli: Cli, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A real 3-node local cluster for a test module; always brought down afterwards."""
    name = unique_name("t3")
    spec = write_spec(tmp_path_factory.mktemp("spec"), name, 3)
    cli.run("up", str(spec), check=True)
    try:
        yield name, spec
    finally:
        cli.run("down", name, "--yes")


@pytest.fixture
def gnupg() -> Iterator[GnuPG]:
    """Real GnuPG with a home of its own for one test (openpgp.py)."""
    with gnupg_home() as home:
        yield home
