"""A source archive whose build code leaves a mark when it runs: what an index that lies
could serve, for tests that prove the archive's hash is checked before any of its code runs
(pip runs a source archive's code to prepare its metadata, even for `pip download`)."""

from __future__ import annotations

import tarfile
from pathlib import Path


def marking_sdist(index: Path, name: str, version: str, mark: Path) -> Path:
    """NAME-VERSION.tar.gz in the folder `index` (for PIP_FIND_LINKS), whose build backend
    creates `mark` when pip loads it; needs nothing from an index to run."""
    tree = index / "tree" / f"{name}-{version}"
    tree.mkdir(parents=True)
    (tree / "pyproject.toml").write_text(
        '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n'
    )
    (tree / "backend.py").write_text(f"open({str(mark)!r}, 'w').close()\n")
    archive = index / f"{name}-{version}.tar.gz"
    with tarfile.open(archive, "w:gz") as packed:
        packed.add(tree, arcname=tree.name)
    return archive
